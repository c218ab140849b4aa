#include <gtest/gtest.h>

#include <fstream>

#include "common/error.h"
#include "io/safetensors.h"
#include "io/tensor_source.h"
#include "test_support.h"

namespace lamina {

TEST(Safetensors, WriteThenReadBack) {
  test::ScratchDir s("st");
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 4.0f, 5.0f, 6.0f};
  const std::vector<uint16_t> b = {float_to_bf16(0.5f), float_to_bf16(-0.75f)};
  const std::string path = (s / "x.safetensors").string();
  SafetensorsWriter w(path, {{"a", DType::F32, {2, 3}}, {"b", DType::BF16, {2}}});
  w.write("a", a.data(), a.size() * 4);
  w.write("b", b.data(), b.size() * 2);
  w.close();

  SafetensorsFile f(path);
  ASSERT_TRUE(f.has("a"));
  const TensorView& ta = f.get("a");
  EXPECT_EQ(ta.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::vector<float>(reinterpret_cast<const float*>(ta.data), reinterpret_cast<const float*>(ta.data) + 6), a);
  EXPECT_EQ(bf16_to_float(reinterpret_cast<const uint16_t*>(f.get("b").data)[1]), -0.75f);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_THROW(f.get("c"), Error);
}

TEST(Safetensors, WriterRejectsOutOfOrderAndMissing) {
  test::ScratchDir s("st");
  const float x = 1;
  SafetensorsWriter w((s / "y.safetensors").string(), {{"a", DType::F32, {1}}, {"b", DType::F32, {1}}});
  EXPECT_THROW(w.write("b", &x, 4), Error);
  w.write("a", &x, 4);
  EXPECT_THROW(w.close(), Error);
}

TEST(Safetensors, ShardedIndexFindsEveryTensor) {
  TensorSource src = TensorSource::open_hf_dir(test::golden_dir("llama31_bf16_sharded").string());
  EXPECT_TRUE(src.has("lm_head.weight"));
  EXPECT_TRUE(src.has("model.layers.2.mlp.down_proj.weight"));
  EXPECT_EQ(src.get("model.embed_tokens.weight").dtype, DType::BF16);
  EXPECT_EQ(src.get("model.embed_tokens.weight").shape, (std::vector<int64_t>{512, 128}));
}

TEST(Safetensors, SizeMismatchIsAnError) {
  test::ScratchDir s("st");
  const std::string header = R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}})";
  std::ofstream out(s / "bad.safetensors", std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << std::string(8, '\0');
  out.close();
  try {
    SafetensorsFile f((s / "bad.safetensors").string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs 16 bytes"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, MissingWeightsNamesTheFormat) {
  test::ScratchDir s("st");
  try {
    TensorSource::open_hf_dir(s.path().string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no safetensors weights"), std::string::npos);
  }
}

}  // namespace lamina
