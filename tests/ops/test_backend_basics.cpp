// The CUDA backend's setup and memory functions. The first two tests also run without a GPU.
#include "common/error.h"
#include "op_test_util.h"

namespace lamina::optest {
namespace {

TEST(CudaBackendBasics, DeviceCountNeverThrows) { EXPECT_GE(cuda_device_count(), 0); }

TEST(CudaBackendBasics, MissingDeviceIsAnError) {
  EXPECT_THROW(make_cuda_backend(cuda_device_count(), DType::BF16), Error);
}

TEST(CudaBackendBasics, RejectsNonFloatActivations) {
  LAMINA_SKIP_WITHOUT_GPU();
  EXPECT_THROW(make_cuda_backend(0, DType::I8), Error);
}

class CudaMemory : public OpTest {};

// Weights uploaded from each source dtype arrive as the activation dtype would round them.
TEST_P(CudaMemory, UploadWeightConverts) {
  const auto v = random_floats(rng_, 1001, -3.0f, 3.0f);
  for (DType src : {DType::F32, DType::F16, DType::BF16}) {
    const auto src_vals = rounded(src, v);
    std::vector<char> raw(v.size() * dtype_size(src));
    convert_from_f32(src_vals.data(), raw.data(), src, v.size());
    void* w = gpu_->upload_weight(raw.data(), src, v.size());
    DeviceBuffer buf = DeviceBuffer::adopt(gpu_.get(), w, v.size() * dtype_size(dt()));
    expect_close(read_act(*gpu_, buf, v.size()), rounded(dt(), src_vals), 0.0,
                 "upload from " + dtype_user_name(src));
  }
}

TEST_P(CudaMemory, CopyRoundTrip) {
  std::vector<int32_t> ids(777);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(rng_() % 100000);
  auto buf = upload_i32(*gpu_, ids);
  std::vector<int32_t> back(ids.size(), -1);
  gpu_->copy_to_host(back.data(), buf.get(), back.size() * 4);
  EXPECT_EQ(back, ids);
  EXPECT_EQ(gpu_->kind(), DeviceKind::CUDA);
  EXPECT_EQ(gpu_->activation_dtype(), dt());
  EXPECT_EQ(gpu_->kv_dtype(false), dt());
  EXPECT_EQ(gpu_->kv_dtype(true), DType::F8_E4M3);  // an FP8 KV cache's pools
}

LAMINA_INSTANTIATE_DTYPES(CudaMemory);

}  // namespace
}  // namespace lamina::optest
