// Schema and autograd of the fused spectral-temporal refinement (docs/design.md).
//
//   fairesi::spectral_temporal_refine(Tensor patches, float tau, float alpha) -> Tensor
//   fairesi::spectral_temporal_refine_backward(Tensor grad, Tensor patches, float tau,
//                                              float alpha) -> Tensor
//
// patches (..., 16), float32/float64/float16/bfloat16 (half types are computed in
// float32), any strides (copied to contiguous), tau > 0, alpha in [0, 1]. alpha = 1 and
// alpha = 0 are the spectral-only and temporal-only ablation variants, so no separate op
// is needed for them. The device kernels live in cpu/ and cuda/; the fake (meta) kernels
// for torch.compile are registered from Python (fairesi/ops/_fake.py). Autograd is registered
// here, in C++, so that the op is differentiable wherever the library is loaded (Python,
// TorchScript, the C++ runner); the backward op itself is not differentiable (no double
// backward).
#include <torch/autograd.h>
#include <torch/library.h>

namespace fairesi {
namespace refine {
namespace {

at::Tensor call_forward(const at::Tensor& patches, double tau, double alpha) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fairesi::spectral_temporal_refine", "")
                       .typed<at::Tensor(const at::Tensor&, double, double)>();
  return op.call(patches, tau, alpha);
}

at::Tensor call_backward(const at::Tensor& grad, const at::Tensor& patches, double tau,
                         double alpha) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fairesi::spectral_temporal_refine_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, double)>();
  return op.call(grad, patches, tau, alpha);
}

class RefineFunction : public torch::autograd::Function<RefineFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& patches,
                            double tau, double alpha) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({patches});
    ctx->saved_data["tau"] = tau;
    ctx->saved_data["alpha"] = alpha;
    return call_forward(patches, tau, alpha);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor patches = ctx->get_saved_variables()[0];
    const at::Tensor grad = call_backward(grad_outputs[0], patches, ctx->saved_data["tau"].toDouble(),
                                          ctx->saved_data["alpha"].toDouble());
    return {grad, at::Tensor(), at::Tensor()};
  }
};

at::Tensor refine_autograd(const at::Tensor& patches, double tau, double alpha) {
  return RefineFunction::apply(patches, tau, alpha);
}

}  // namespace

TORCH_LIBRARY(fairesi, m) {
  m.def("spectral_temporal_refine(Tensor patches, float tau, float alpha) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def(
      "spectral_temporal_refine_backward(Tensor grad, Tensor patches, float tau, float alpha) "
      "-> Tensor",
      {at::Tag::pt2_compliant_tag});
}

TORCH_LIBRARY_IMPL(fairesi, Autograd, m) {
  m.impl("spectral_temporal_refine", &refine_autograd);
}

}  // namespace refine
}  // namespace fairesi
