#include <gtest/gtest.h>

#include <random>

#include "common/error.h"
#include "io/engine_file.h"
#include "test_support.h"

namespace lamina {

TEST(EngineFile, RoundTripAlignedAndChecksummed) {
  test::ScratchDir s("eng");
  std::mt19937 rng(3);
  std::vector<float> a(1000);
  for (auto& x : a) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  std::vector<uint16_t> b(77, 0x3f80);
  const std::string path = (s / "rank0.engine").string();
  EngineFileWriter w(path);
  w.add("a", DType::F32, {10, 100}, a.data(), a.size() * 4);
  w.add("b", DType::BF16, {77}, b.data(), b.size() * 2);
  w.finish();

  EngineFile f(path);
  f.verify();
  const EngineTensor& ta = f.get("a");
  EXPECT_EQ(ta.offset % 256, 0u);
  EXPECT_EQ(ta.shape, (std::vector<int64_t>{10, 100}));
  EXPECT_EQ(0, std::memcmp(ta.data, a.data(), a.size() * 4));
  EXPECT_EQ(f.get("b").offset % 256, 0u);
  EXPECT_THROW(f.get("zzz"), Error);
}

TEST(EngineFile, ChecksumSeesASingleBitFlip) {
  std::vector<uint8_t> data(4099);
  for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 31);
  const uint64_t h = engine_checksum(data.data(), data.size());
  for (size_t pos : {0ul, 17ul, 4098ul}) {
    data[pos] ^= 1;
    EXPECT_NE(engine_checksum(data.data(), data.size()), h) << pos;
    data[pos] ^= 1;
  }
}

}  // namespace lamina
