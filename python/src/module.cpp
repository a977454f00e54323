// The Python face of lowrank: a thin pybind11 layer over the C++ core (docs/python.md).
//
// Everything that computes lives in the library: GradientReducer (reducer/gradient_reducer.h) for
// plain training loops, DdpHookState and CommHook (ddp/comm_hook.h) for DistributedDataParallel.
// This file turns Python arguments into the library's options, wraps torch.distributed's process
// group as a Communicator, and registers the C++ hook on DDP's C++ reducer.
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/jit/python/pybind_utils.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "lowrank/comm/process_group_communicator.h"
#include "lowrank/compressors/registry.h"
#include "lowrank/ddp/comm_hook.h"
#include "lowrank/reducer/gradient_reducer.h"

namespace c10d {
// DDP's C++ reducer (the object behind `ddp.reducer`). Debian's reducer.hpp cannot be included: it
// pulls a distributed-autograd header that python3-torch does not ship. The hook needs only this
// member function, exported from libtorch_cpu; the class has no virtual functions, so declaring it
// here names the same type and the same symbol.
class TORCH_API Reducer {
 public:
  void register_comm_hook(std::unique_ptr<CommHookInterface> iface);
};
}  // namespace c10d

namespace py = pybind11;

namespace lowrank {
namespace python {
namespace {

using NamedParams = std::vector<std::pair<std::string, at::Tensor>>;

// c10::Error's message without the C++ backtrace (what a Python user needs to read).
[[noreturn]] void raise_value_error(const c10::Error& e) { throw py::value_error(e.what_without_backtrace()); }

std::string type_name(const py::handle& v) { return py::str(py::type::of(v).attr("__name__")); }

// The keys that configure the reducer rather than the compressor (ReducerOptions::fields;
// docs/python.md lists them).
const std::vector<std::string>& reducer_keys() {
  static const std::vector<std::string> keys = field_keys<ReducerOptions>();
  return keys;
}

bool as_bool(const std::string& key, const py::handle& v) {
  if (!py::isinstance<py::bool_>(v))
    throw py::value_error(key + " must be True or False, got " + std::string(py::repr(v)) + " (" + type_name(v) + ")");
  return v.cast<bool>();
}

int64_t as_int(const std::string& key, const py::handle& v) {
  if (py::isinstance<py::bool_>(v) || !py::isinstance<py::int_>(v))
    throw py::value_error(key + " must be an integer, got " + std::string(py::repr(v)) + " (" + type_name(v) + ")");
  return v.cast<int64_t>();
}

double as_float(const std::string& key, const py::handle& v) {
  if (py::isinstance<py::bool_>(v) || !(py::isinstance<py::int_>(v) || py::isinstance<py::float_>(v)))
    throw py::value_error(key + " must be a number, got " + std::string(py::repr(v)) + " (" + type_name(v) + ")");
  return v.cast<double>();
}

std::string as_str(const std::string& key, const py::handle& v) {
  if (!py::isinstance<py::str>(v))
    throw py::value_error(key + " must be a string, got " + std::string(py::repr(v)) + " (" + type_name(v) + ")");
  return v.cast<std::string>();
}

// The compressor's option as the CLI's --opt would spell it.
std::string option_text(const std::string& key, const py::handle& v) {
  if (v.is_none()) throw py::value_error("compressor option " + key + " must not be None");
  if (py::isinstance<py::bool_>(v)) return v.cast<bool>() ? "true" : "false";
  if (py::isinstance<py::int_>(v)) return std::to_string(v.cast<int64_t>());
  if (py::isinstance<py::float_>(v)) return py::repr(v);
  if (py::isinstance<py::str>(v)) return v.cast<std::string>();
  throw py::value_error("compressor option " + key + " must be a number, a bool or a string, got " +
                        std::string(py::repr(v)) + " (" + type_name(v) + ")");
}

// Reads each ReducerOptions field (ReducerOptions::fields) that `kwargs` names, from its Python
// value: the type each field takes is checked here, so that 1 is no bool and "1" no number.
struct KwargsReader {
  const py::kwargs& kwargs;
  bool given(const char* key) const { return kwargs.contains(key); }
  py::handle value(const char* key) const { return kwargs[py::str(key)]; }

  static void assign(const std::string& key, const py::handle& v, bool& f) { f = as_bool(key, v); }
  static void assign(const std::string& key, const py::handle& v, int64_t& f) { f = as_int(key, v); }
  static void assign(const std::string& key, const py::handle& v, double& f) { f = as_float(key, v); }
  static void assign(const std::string& key, const py::handle& v, uint64_t& f) {
    const int64_t x = as_int(key, v);
    if (x < 0) throw py::value_error(key + " must be >= 0, got " + std::to_string(x));
    f = static_cast<uint64_t>(x);
  }
  static void assign(const std::string& key, const py::handle& v, std::optional<bool>& f) {
    f = v.is_none() ? std::nullopt : std::optional<bool>(as_bool(key, v));
  }
  static void assign(const std::string& key, const py::handle& v, std::vector<std::string>& f) {
    f.clear();
    if (py::isinstance<py::str>(v)) {
      f.push_back(v.cast<std::string>());
      return;
    }
    if (!py::isinstance<py::iterable>(v))
      throw py::value_error(key + " must be a list of strings, got " + std::string(py::repr(v)));
    for (const auto& n : v) f.push_back(as_str(key + " entry", n));
  }

  template <typename T>
  void operator()(const char* key, T& field, bool /*shown*/ = true) const {
    if (given(key)) assign(key, value(key), field);
  }
  template <typename E>
  void operator()(const char* key, E& field, const Choices<E>& choices, bool /*shown*/ = true) const {
    if (given(key)) field = parse_choice(key, as_str(key, value(key)), choices);
  }
};

struct Settings {
  std::unique_ptr<Compressor> compressor;
  ReducerOptions options;
};

// `kwargs` split into the reducer's options and the compressor's; bad names and values raise
// ValueError naming the key and the valid choices. `ddp`: overlap is no option there.
Settings parse_settings(const std::string& compressor, const py::kwargs& kwargs, bool ddp) {
  Settings s;
  Config config;
  const auto& rk = reducer_keys();
  for (const auto& item : kwargs) {
    const std::string key = py::str(item.first);
    const py::handle v = item.second;
    if (std::find(rk.begin(), rk.end(), key) == rk.end()) {
      config.set(key, option_text(key, v));
      continue;
    }
    if (ddp && key == "overlap")
      throw py::value_error("overlap is not an option of a DDP hook: DDP hands buckets over during backward() "
                            "and lowrank reduces each as soon as it is complete");
  }
  try {
    ReducerOptions::fields(s.options, KwargsReader{kwargs});
    s.options.validate();
    s.compressor = make_compressor(compressor, config);
  } catch (const c10::Error& e) {
    std::string msg = std::string(e.what_without_backtrace()) + " (reducer options: ";
    for (size_t i = 0; i < rk.size(); ++i) msg += (i ? ", " : "") + rk[i];
    throw py::value_error(msg + ")");
  }
  return s;
}

// The process group as a Communicator. None: a new group of all ranks (torch.distributed.new_group(),
// collective), private to lowrank, because lowrank issues collectives from its own thread while
// backward() runs and a collective of the caller's on the same group would interleave with them in
// an order that can differ between ranks.
std::shared_ptr<comm::Communicator> communicator_for(const py::object& process_group, const char* who) {
  py::object pg = process_group;
  if (pg.is_none()) {
    py::module_ dist = py::module_::import("torch.distributed");
    if (!dist.attr("is_available")().cast<bool>() || !dist.attr("is_initialized")().cast<bool>())
      throw py::value_error(std::string(who) +
                            ": torch.distributed is not initialized; call torch.distributed.init_process_group("
                            "\"gloo\", ...) first, or pass process_group=");
    pg = dist.attr("new_group")();
  }
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  try {
    group = pg.cast<c10::intrusive_ptr<c10d::ProcessGroup>>();
  } catch (const py::cast_error&) {
    throw py::value_error(std::string(who) + ": process_group must be a torch.distributed process group, got " +
                          std::string(py::repr(pg)));
  }
  const std::string backend = group->getBackendName();
  if (backend != "gloo")
    throw py::value_error(std::string(who) + ": process_group has backend '" + backend +
                          "'; lowrank's buffers live on the CPU and run on 'gloo' process groups (CUDA and "
                          "'nccl' are not supported yet)");
  return comm::wrap_process_group(group);
}

NamedParams named_params(const py::iterable& params, const char* who) {
  NamedParams out;
  for (const auto& item : params) {
    py::tuple t;
    try {
      t = item.cast<py::tuple>();
    } catch (const py::cast_error&) {
      throw py::value_error(std::string(who) + ": expected (name, parameter) pairs as model.named_parameters() "
                            "gives, got " + std::string(py::repr(item)));
    }
    if (t.size() != 2)
      throw py::value_error(std::string(who) + ": expected (name, parameter) pairs, got " + std::string(py::repr(item)));
    const auto name = as_str("parameter name", t[0]);
    if (!THPVariable_Check(t[1].ptr()))
      throw py::value_error(std::string(who) + ": parameter '" + name + "' is not a tensor: " + std::string(py::repr(t[1])));
    const auto tensor = t[1].cast<at::Tensor>();
    if (!tensor.device().is_cpu())
      throw py::value_error(std::string(who) + ": parameter '" + name + "' is on " + tensor.device().str() +
                            "; lowrank reduces CPU tensors (CUDA is not supported yet)");
    if (tensor.requires_grad()) out.emplace_back(name, tensor);  // as DDP: frozen parameters take no part
  }
  if (out.empty()) throw py::value_error(std::string(who) + ": no parameter that requires a gradient");
  return out;
}

py::dict stats_dict(const ReducerStats& s) {
  py::dict d;
  d["steps"] = s.steps;
  d["skipped_steps"] = s.skipped_steps;
  d["compressed_steps"] = s.compressed_steps;
  d["bytes_sent"] = s.bytes_sent;
  d["dense_bytes"] = s.dense_bytes;
  d["last_bytes_sent"] = s.last_bytes_sent;
  d["compression_ratio"] = s.compression_ratio();
  d["compress_ms"] = s.compress_seconds * 1e3;
  d["collective_ms"] = s.comm_seconds * 1e3;
  d["wait_ms"] = s.wait_seconds * 1e3;
  d["buckets_from_backward"] = s.buckets_from_backward;
  d["relative_error"] = s.relative_error;
  d["ef_norm"] = s.ef_norm;
  return d;
}

// ranks(): one dict per compressed matrix, in parameter order.
py::list ranks_list(const std::vector<RankedMatrix>& ranks) {
  py::list out;
  for (const auto& r : ranks) {
    py::dict d;
    d["name"] = r.name;
    d["shape"] = py::make_tuple(r.m, r.n);
    d["rank"] = r.rank;
    py::list history;
    for (const auto& [step, rank] : r.history) history.append(py::make_tuple(step, rank));
    d["history"] = history;
    out.append(d);
  }
  return out;
}

constexpr const char* kRanksDoc =
    "Each compressed matrix now, in parameter order: {'name', 'shape': (m, n), 'rank' (0 for compressors "
    "without one), 'history': [(compressed step, new rank), ...] (rank=auto only)}.";
constexpr const char* kMeanRankDoc = "The mean rank over the compressed matrices now (0 for compressors without one).";

py::dict state_to_dict(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  py::dict d;
  for (const auto& kv : state) d[py::str(kv.first)] = kv.second;
  return d;
}

std::vector<std::pair<std::string, at::Tensor>> dict_to_state(const py::dict& d) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& kv : d) {
    const std::string key = py::str(kv.first);
    try {
      out.emplace_back(key, kv.second.cast<at::Tensor>());
    } catch (const py::cast_error&) {
      throw py::value_error("state_dict entry '" + key + "' is not a tensor: " + std::string(py::repr(kv.second)));
    }
  }
  return out;
}

template <typename F>
auto value_errors(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    raise_value_error(e);
  }
}

// Python's GradientReducer: the C++ reducer plus the parameters it was made for.
struct PyGradientReducer {
  std::unique_ptr<GradientReducer> reducer;
};

// Python's HookState.
struct PyHookState {
  std::shared_ptr<ddp::DdpHookState> state;
  bool registered = false;
};

// lowrank.GradientReducer: the reducer of a plain training loop.
void bind_reducer(py::module_& m) {
  py::class_<PyGradientReducer>(m, "GradientReducer", R"doc(
GradientReducer(named_parameters, compressor, process_group=None, **options)

Averages gradients over the ranks of `process_group` (None: torch.distributed's default group),
compressing what is worth compressing, in C++. Call reduce() after every backward(); it returns
False on every rank when some rank's gradient held a NaN/Inf (skip the optimizer step: nothing
changed). Gradients become views into the reducer's buckets; zero them in place (optimizer.zero_grad(
set_to_none=False) or reducer.zero_grad()). Options: the compressor's (rank=4, ...) and the reducer's
(lowrank.reducer_options()).)doc")
      .def(py::init([](const py::iterable& params, const std::string& compressor, const py::object& process_group,
                       const py::kwargs& kwargs) {
             auto named = named_params(params, "GradientReducer");
             Settings s = parse_settings(compressor, kwargs, /*ddp=*/false);
             auto comm = communicator_for(process_group, "GradientReducer");
             auto r = std::make_unique<PyGradientReducer>();
             {
               py::gil_scoped_release release;  // collective: the ranks compare their settings
               r->reducer = value_errors([&] {
                 return std::make_unique<GradientReducer>(std::move(named), std::move(s.compressor), comm, s.options);
               });
             }
             return r;
           }),
           py::arg("named_parameters"), py::arg("compressor"), py::arg("process_group") = py::none())
      .def(
          "reduce", [](PyGradientReducer& r) { return r.reducer->reduce(); }, py::call_guard<py::gil_scoped_release>(),
          "Replaces every gradient by the average over ranks; False (on every rank) after a NaN/Inf step.")
      .def(
          "zero_grad", [](PyGradientReducer& r) { r.reducer->zero_grad(); }, py::call_guard<py::gil_scoped_release>())
      .def("stats", [](const PyGradientReducer& r) { return stats_dict(r.reducer->stats()); })
      .def("state_dict", [](const PyGradientReducer& r) {
        auto state = r.reducer->state_dict();
        for (auto& kv : state) kv.second = kv.second.clone();
        return state_to_dict(state);
      })
      .def("load_state_dict",
           [](PyGradientReducer& r, const py::dict& d) { value_errors([&] { r.reducer->load_state_dict(dict_to_state(d)); }); })
      .def_property_readonly("step", [](const PyGradientReducer& r) { return r.reducer->step(); })
      .def_property_readonly("last_nonfinite_ranks", [](const PyGradientReducer& r) { return r.reducer->last_nonfinite_ranks(); })
      .def("ranks", [](const PyGradientReducer& r) { return ranks_list(r.reducer->ranks()); }, kRanksDoc)
      .def("mean_rank", [](const PyGradientReducer& r) { return r.reducer->mean_rank(); }, kMeanRankDoc)
      .def("compressed_names", [](const PyGradientReducer& r) { return r.reducer->compressed_names(); })
      .def("bucket_names", [](const PyGradientReducer& r) { return r.reducer->bucket_names(); })
      .def("warnings", [](const PyGradientReducer& r) { return r.reducer->warnings(); })
      .def("describe", [](const PyGradientReducer& r) { return r.reducer->describe(); })
      .def("__repr__", [](const PyGradientReducer& r) { return "lowrank.GradientReducer(" + r.reducer->describe() + ")"; });
}

// HookState's accessors. They wait for the hook's thread to finish its bucket: without the GIL, so
// that a Python callback on that thread (comm_hook's .then) cannot wait for them in turn.
void bind_hook_state_accessors(py::class_<PyHookState>& cls) {
  cls.def_property_readonly("world_size", [](const PyHookState& h) { return h.state->world_size(); })
      .def("stats",
           [](const PyHookState& h) {
             ReducerStats s;
             {
               py::gil_scoped_release release;
               s = h.state->stats();
             }
             return stats_dict(s);
           })
      .def("last_step_skipped", [](const PyHookState& h) { return h.state->last_step_skipped(); },
           py::call_guard<py::gil_scoped_release>(),
           "Whether the last step was skipped (a NaN/Inf on some rank): then skip the optimizer step.")
      .def("state_dict",
           [](const PyHookState& h) {
             std::vector<std::pair<std::string, at::Tensor>> state;
             {
               py::gil_scoped_release release;
               state = value_errors([&] { return h.state->state_dict(); });
             }
             return state_to_dict(state);
           })
      .def("load_state_dict",
           [](PyHookState& h, const py::dict& d) {
             auto state = dict_to_state(d);
             py::gil_scoped_release release;
             value_errors([&] { h.state->load_state_dict(state); });
           })
      .def("bucket_names", [](const PyHookState& h) { return h.state->bucket_names(); },
           py::call_guard<py::gil_scoped_release>())
      .def("ranks",
           [](const PyHookState& h) {
             std::vector<RankedMatrix> ranks;
             {
               py::gil_scoped_release release;
               ranks = h.state->ranks();
             }
             return ranks_list(ranks);
           },
           kRanksDoc)
      .def("mean_rank", [](const PyHookState& h) { return h.state->mean_rank(); },
           py::call_guard<py::gil_scoped_release>(), kMeanRankDoc)
      .def("describe", [](const PyHookState& h) { return h.state->describe(); },
           py::call_guard<py::gil_scoped_release>())
      .def("__repr__", [](const PyHookState& h) { return "lowrank.HookState(" + h.state->describe() + ")"; });
}

// lowrank.HookState: the state behind lowrank's DDP communication hook.
void bind_hook_state(py::module_& m) {
  py::class_<PyHookState> cls(m, "HookState", R"doc(
HookState(compressor, process_group=None, module=None, **options)

State of lowrank's DDP communication hook: use with ddp.register_comm_hook(state, lowrank.comm_hook),
or let lowrank.register_ddp_hook(ddp, compressor, **options) make and register one (the fast route:
the hook then runs in C++ without the GIL). `module`: the model, so parameters carry their names
(uncompressed_names, state_dict keys); without it they are named param.<k> in DDP's bucket order.)doc");
  cls.def(py::init([](const std::string& compressor, const py::object& process_group, const py::object& module,
                       const py::kwargs& kwargs) {
             NamedParams named;
             if (!module.is_none()) named = named_params(module.attr("named_parameters")(), "HookState");
             Settings s = parse_settings(compressor, kwargs, /*ddp=*/true);
             auto comm = communicator_for(process_group, "HookState");
             auto h = std::make_unique<PyHookState>();
             py::gil_scoped_release release;
             h->state = value_errors([&] {
               return std::make_shared<ddp::DdpHookState>(std::move(named), std::move(s.compressor), comm, s.options);
             });
             return h;
           }),
           py::arg("compressor"), py::arg("process_group") = py::none(), py::arg("module") = py::none())
      .def("_run",
           [](PyHookState& h, c10d::GradBucket& bucket) {
             c10::intrusive_ptr<c10::ivalue::Future> fut;
             {
               py::gil_scoped_release release;
               fut = h.state->run(bucket);
             }
             return std::make_shared<torch::jit::PythonFutureWrapper>(fut);
           })
      .def("_register", [](PyHookState& h, const py::object& reducer) {
             if (h.registered) throw py::value_error("register_ddp_hook: this HookState is already registered");
             c10d::Reducer& r = reducer.cast<c10d::Reducer&>();
             try {
               r.register_comm_hook(std::make_unique<ddp::CommHook>(h.state));
             } catch (const c10::Error& e) {
               throw std::runtime_error(std::string("register_ddp_hook: DDP refused the hook: ") +
                                        e.what_without_backtrace() + " (DDP takes one communication hook)");
             }
             h.registered = true;
           });
  bind_hook_state_accessors(cls);
}

}  // namespace
}  // namespace python
}  // namespace lowrank

using namespace lowrank;          // NOLINT: the module's body names the library's types
using namespace lowrank::python;  // NOLINT

PYBIND11_MODULE(_lowrank, m) {
  m.doc() = "lowrank: low-rank gradient compression for data-parallel training (docs/python.md)";

  m.def(
      "compressors",
      [] {
        auto names = compressor_names();
        std::sort(names.begin(), names.end());
        return names;
      },
      "The registered compressors' names, sorted.");
  m.def("reducer_options", [] { return reducer_keys(); },
        "The keyword arguments that configure the reducer (the rest go to the compressor, as --opt).");

  bind_reducer(m);
  bind_hook_state(m);
}
