#include "lowrank/reducer/error_feedback.h"

#include "lowrank/compressors/compressor.h"

namespace lowrank {

ErrorFeedback::ErrorFeedback(bool on, bool global_residual, double beta)
    : on_(on), global_(global_residual), beta_(beta) {}

bool ErrorFeedback::in_place(const Compressor::Traits& c) const {
  return on_ && !global_ && beta_ == 0 && c.in_place_residual && !c.wants_raw_gradient;
}

void ErrorFeedback::form_delta_in_place(const at::Tensor& G, at::Tensor& E) const { E.add_(G); }

void ErrorFeedback::finish_in_place(at::Tensor& E, bool reset) const {
  if (reset) E.zero_();
}

void ErrorFeedback::form_delta(const at::Tensor& G, const at::Tensor& E, at::Tensor& D) const {
  if (on_) at::add_out(D, G, E);
  else D.copy_(G);
}

void ErrorFeedback::update(at::Tensor& E, at::Tensor& R, const at::Tensor& D, const at::Tensor& O, bool reset) const {
  if (!on_) return;
  if (reset) {
    E.zero_();
    return;
  }
  if (global_) at::sub_out(R, D, O);  // r = Δ − ĝ
  if (beta_ == 0) {
    E.copy_(R);
  } else {
    R.mul_(1 - beta_).add_(E, beta_);  // (1−β)·r + β·e_old
    E.copy_(R);
  }
}

void ErrorFeedback::dense_before(at::Tensor& G, at::Tensor& E, at::Tensor& S, int world) const {
  if (beta_ == 0) {
    E.add_(G);  // E = Δ
    G.copy_(E);
  } else {
    at::add_out(S, G, E);  // S = Δ
    G.copy_(S);
  }
  if (world > 1) G.div_(world);
}

void ErrorFeedback::dense_after(const at::Tensor& G, at::Tensor& E, at::Tensor& S) const {
  if (beta_ == 0) {
    E.sub_(G);  // Δ − mean
  } else {
    S.sub_(G).mul_(1 - beta_).add_(E, beta_);
    E.copy_(S);
  }
}

}  // namespace lowrank
