#include "lowrank/train/loop_state.h"

#include <gtest/gtest.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <map>
#include <sstream>

namespace lowrank {
namespace {

// A loop state whose every field differs from its default.
train::LoopState filled() {
  train::LoopState s(4);
  s.step = 17;
  s.skipped_steps = 2;
  for (double v : {0.5, 0.25, 0.125}) s.recent_loss.add(v);
  s.row_loss = train::AverageMeter(1.5, 3);
  s.row_ms = train::AverageMeter(30.0, 3);
  s.epoch_accuracy = {0.5, 0.75};
  s.test_accuracy = 0.875;
  s.test_loss = 0.375;
  s.elapsed_before = 12.5;
  return s;
}

void expect_same(const train::LoopState& a, const train::LoopState& b) {
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.skipped_steps, b.skipped_steps);
  EXPECT_EQ(a.recent_loss.values(), b.recent_loss.values());
  EXPECT_EQ(a.recent_loss.capacity(), b.recent_loss.capacity());
  EXPECT_EQ(a.row_loss.sum(), b.row_loss.sum());
  EXPECT_EQ(a.row_loss.count(), b.row_loss.count());
  EXPECT_EQ(a.row_ms.sum(), b.row_ms.sum());
  EXPECT_EQ(a.row_ms.count(), b.row_ms.count());
  EXPECT_EQ(a.epoch_accuracy, b.epoch_accuracy);
  EXPECT_EQ(a.test_accuracy, b.test_accuracy);
  EXPECT_EQ(a.test_loss, b.test_loss);
  EXPECT_EQ(a.elapsed_before, b.elapsed_before);
}

using TensorMap = std::map<std::string, at::Tensor>;

TensorMap as_map(const std::vector<std::pair<std::string, at::Tensor>>& dict) { return {dict.begin(), dict.end()}; }

auto getter(const TensorMap& m) {
  return [&m](const std::string& key) {
    auto it = m.find(key);
    TORCH_CHECK(it != m.end(), "no '", key, "'");
    return it->second;
  };
}

// The checkpoint format (checkpoint.h, loop_state.h): these keys with these types, in this order.
TEST(LoopState, StateDictHasTheCheckpointFormatsKeysAndTypes) {
  const auto dict = filled().state_dict();
  const std::vector<std::pair<std::string, at::ScalarType>> want = {
      {"trainer/step", at::kLong},   {"trainer/skipped", at::kLong},        {"trainer/recent", at::kDouble},
      {"trainer/row", at::kDouble},  {"trainer/epoch_accuracy", at::kDouble}, {"trainer/test", at::kDouble}};
  ASSERT_EQ(dict.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(dict[i].first, want[i].first);
    EXPECT_EQ(dict[i].second.scalar_type(), want[i].second) << want[i].first;
  }
  const TensorMap m = as_map(dict);
  EXPECT_EQ(m.at("trainer/step").item<int64_t>(), 17);
  EXPECT_TRUE(at::equal(m.at("trainer/row"), at::tensor({1.5, 30.0, 3.0}, at::kDouble)));
  EXPECT_TRUE(at::equal(m.at("trainer/test"), at::tensor({0.875, 0.375, 12.5}, at::kDouble)));
  EXPECT_TRUE(at::equal(m.at("trainer/recent"), at::tensor({0.5, 0.25, 0.125}, at::kDouble)));
}

TEST(LoopState, ARoundTripRestoresEveryField) {
  const train::LoopState saved = filled();
  train::LoopState loaded(4);
  const TensorMap m = as_map(saved.state_dict());
  loaded.load_state_dict(getter(m), "test");
  expect_same(saved, loaded);
  // Through a torch archive, as a checkpoint shard stores them: parallel lists of names and tensors.
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
  for (const auto& kv : saved.state_dict()) {
    names.push_back(kv.first);
    tensors.push_back(kv.second);
  }
  torch::serialize::OutputArchive out;
  out.write("names", c10::IValue(c10::List<std::string>(names)));
  out.write("tensors", c10::IValue(c10::List<at::Tensor>(tensors)));
  std::ostringstream bytes;
  out.save_to(bytes);
  torch::serialize::InputArchive in;
  const std::string data = bytes.str();
  in.load_from(data.data(), data.size());
  c10::IValue read_names, read_tensors;
  in.read("names", read_names);
  in.read("tensors", read_tensors);
  TensorMap read;
  for (size_t i = 0; i < read_names.toList().size(); ++i)
    read[read_names.toList().get(i).toStringRef()] = read_tensors.toTensorList().get(i);
  ASSERT_EQ(read.size(), names.size());
  train::LoopState from_archive(4);
  from_archive.load_state_dict(getter(read), "test");
  expect_same(saved, from_archive);
  // The default (empty) state survives too.
  train::LoopState empty(4), again(4);
  const TensorMap e = as_map(empty.state_dict());
  again.load_state_dict(getter(e), "test");
  expect_same(empty, again);
}

TEST(LoopState, ABadTensorIsRefusedNamingTheKeyAndNothingChanges) {
  const train::LoopState before = filled();
  train::LoopState s = before;
  TensorMap m = as_map(train::LoopState(4).state_dict());
  m["trainer/row"] = at::tensor({1.0, 2.0}, at::kDouble);
  try {
    s.load_state_dict(getter(m), "shard x");
    ADD_FAILURE() << "a 2-element trainer/row loaded";
  } catch (const c10::Error& e) {
    EXPECT_NE(e.msg().find("shard x: 'trainer/row' is [2] Double, expected [3] Double"), std::string::npos) << e.msg();
  }
  expect_same(before, s);
  m = as_map(train::LoopState(4).state_dict());
  m["trainer/step"] = at::tensor({1.0}, at::kDouble);
  EXPECT_THROW(s.load_state_dict(getter(m), "shard x"), c10::Error);
  m = as_map(train::LoopState(4).state_dict());
  m["trainer/row"] = at::tensor({1.0, 2.0, 0.5}, at::kDouble);  // half a step
  EXPECT_THROW(s.load_state_dict(getter(m), "shard x"), c10::Error);
  m = as_map(train::LoopState(4).state_dict());
  m.erase("trainer/test");
  EXPECT_THROW(s.load_state_dict(getter(m), "shard x"), c10::Error);
  expect_same(before, s);
}

}  // namespace
}  // namespace lowrank
