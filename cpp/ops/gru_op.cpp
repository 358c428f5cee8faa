// Schema and autograd of the fused bidirectional GRU layer (docs/design.md § fused BiGRU).
//
//   fairesi::bigru(Tensor x, Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh) -> Tensor
//   fairesi::bigru_forward(x, w_ih, w_hh, b_ih, b_hh) -> (Tensor out, Tensor hs, Tensor gates)
//   fairesi::bigru_backward(Tensor grad, Tensor x, Tensor w_ih, Tensor w_hh, Tensor hs,
//                           Tensor gates) -> (dx, dw_ih, dw_hh, db_ih, db_hh)
//
// One layer of torch.nn.GRU(bidirectional=True, batch_first=True) with zero initial state:
// x (B, T, I); the two directions' parameters stacked, w_ih (2, 3H, I), w_hh (2, 3H, H),
// b_ih and b_hh (2, 3H), in nn.GRU's gate order (r, z, n); out (B, T, 2H), the forward
// direction's states in out[..., :H]. All of one dtype (float32, float64, bfloat16, float16)
// on the CPU. hs (2, T + 1, B, H) and gates (2, T, B, 4H) are what the backward needs, in
// float32 (float64 for float64 inputs): every direction's states h_0 = 0, h_1, ..., h_T in
// its own time order, and r, z, n and W_hn h + b_hn of each step.
//
// CPU only: on CUDA, nn.GRU already runs cuDNN's fused kernels. Autograd is registered here,
// in C++, like the refinement op's; the backward op is not differentiable (no double
// backward). The fake kernels for torch.compile are registered from Python
// (fairesi/ops/_fake.py).
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

namespace fairesi {
namespace gru {
namespace {

using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensors5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Tensors3 call_forward(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                      const at::Tensor& b_ih, const at::Tensor& b_hh) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fairesi::bigru_forward", "")
                       .typed<Tensors3(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                       const at::Tensor&, const at::Tensor&)>();
  return op.call(x, w_ih, w_hh, b_ih, b_hh);
}

Tensors5 call_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w_ih,
                       const at::Tensor& w_hh, const at::Tensor& hs, const at::Tensor& gates) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fairesi::bigru_backward", "")
                       .typed<Tensors5(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                       const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(grad, x, w_ih, w_hh, hs, gates);
}

class BiGruFunction : public torch::autograd::Function<BiGruFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w_ih, const at::Tensor& w_hh,
                            const at::Tensor& b_ih, const at::Tensor& b_hh) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, hs, gates] = call_forward(x, w_ih, w_hh, b_ih, b_hh);
    ctx->save_for_backward({x, w_ih, w_hh, hs, gates});
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    auto [dx, dw_ih, dw_hh, db_ih, db_hh] =
        call_backward(grad_outputs[0], saved[0], saved[1], saved[2], saved[3], saved[4]);
    return {dx, dw_ih, dw_hh, db_ih, db_hh};
  }
};

at::Tensor bigru_autograd(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const at::Tensor& b_ih, const at::Tensor& b_hh) {
  return BiGruFunction::apply(x, w_ih, w_hh, b_ih, b_hh);
}

// Below autograd (inference mode, or inside another op) the output alone.
at::Tensor bigru_plain(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                       const at::Tensor& b_ih, const at::Tensor& b_hh) {
  return std::get<0>(call_forward(x, w_ih, w_hh, b_ih, b_hh));
}

}  // namespace

// A fragment: the namespace's TORCH_LIBRARY block is the refinement op's (refine_op.cpp).
TORCH_LIBRARY_FRAGMENT(fairesi, m) {
  m.def("bigru(Tensor x, Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def(
      "bigru_forward(Tensor x, Tensor w_ih, Tensor w_hh, Tensor b_ih, Tensor b_hh) "
      "-> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "bigru_backward(Tensor grad, Tensor x, Tensor w_ih, Tensor w_hh, Tensor hs, Tensor gates) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(fairesi, Autograd, m) { m.impl("bigru", &bigru_autograd); }

TORCH_LIBRARY_IMPL(fairesi, CompositeExplicitAutograd, m) { m.impl("bigru", &bigru_plain); }

}  // namespace gru
}  // namespace fairesi
