// Size / duration / percentage parsing and printing (src/tools/units.h).
#include <gtest/gtest.h>

#include "tools/units.h"

namespace pdm::tools {
namespace {

TEST(ToolsUnits, SizesAreBinaryWithOrWithoutI) {
  EXPECT_EQ(*ParseSize("0"), 0u);
  EXPECT_EQ(*ParseSize("123"), 123u);
  EXPECT_EQ(*ParseSize("10k"), 10240u);
  EXPECT_EQ(*ParseSize("10K"), 10240u);
  EXPECT_EQ(*ParseSize("10KiB"), 10240u);
  EXPECT_EQ(*ParseSize("10kb"), 10240u);
  EXPECT_EQ(*ParseSize("10G"), 10ull << 30);
  EXPECT_EQ(*ParseSize("1.5G"), 3ull << 29);
  EXPECT_EQ(*ParseSize("2T"), 2ull << 40);
  EXPECT_EQ(*ParseSize("7B"), 7u);
}

TEST(ToolsUnits, BadSizesAreRefused) {
  for (const char* s : {"", "-1", "G", "10X", "10 Gx", "99999999E"}) {
    auto r = ParseSize(s);
    EXPECT_FALSE(r.ok()) << s;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    }
  }
}

// The edges: a number too long for a double is refused (it used to throw out
// of std::stod and end the tool), and sizes from 8 EiB up to 2^64 convert
// exactly (llround went through long long and had no value for them).
TEST(ToolsUnits, HugeNumbersAreRefusedOrExact) {
  const std::string digits(400, '9');
  for (const std::string& s : {digits, digits + "k", "1" + std::string(320, '0')}) {
    auto r = ParseSize(s);
    EXPECT_FALSE(r.ok()) << s.size();
    EXPECT_FALSE(ParseDuration(s).ok()) << s.size();
  }
  EXPECT_EQ(*ParseSize("8E"), uint64_t{8} << 60);
  EXPECT_EQ(*ParseSize("15E"), uint64_t{15} << 60);
  EXPECT_EQ(*ParseSize("18446744073709549568"), 18446744073709549568ull);  // largest double below 2^64
  EXPECT_FALSE(ParseSize("16E").ok());
}

TEST(ToolsUnits, Durations) {
  EXPECT_EQ(*ParseDuration("30d"), 30 * 86400);
  EXPECT_EQ(*ParseDuration("12h"), 12 * 3600);
  EXPECT_EQ(*ParseDuration("45m"), 45 * 60);
  EXPECT_EQ(*ParseDuration("90s"), 90);
  EXPECT_EQ(*ParseDuration("90"), 90);
  EXPECT_EQ(*ParseDuration("2w"), 14 * 86400);
  EXPECT_EQ(*ParseDuration("1y"), 365 * 86400);
  EXPECT_EQ(*ParseDuration("1.5d"), 129600);
  EXPECT_FALSE(ParseDuration("30x").ok());
  EXPECT_FALSE(ParseDuration("-3d").ok());
  EXPECT_FALSE(ParseDuration("d").ok());
}

TEST(ToolsUnits, Percentages) {
  EXPECT_DOUBLE_EQ(*ParsePercent("90%"), 0.9);
  EXPECT_DOUBLE_EQ(*ParsePercent("90"), 0.9);
  EXPECT_DOUBLE_EQ(*ParsePercent("0.8"), 0.8);
  EXPECT_DOUBLE_EQ(*ParsePercent("100%"), 1.0);
  EXPECT_FALSE(ParsePercent("101%").ok());
  EXPECT_FALSE(ParsePercent("9o%").ok());
}

TEST(ToolsUnits, Printing) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.0 KiB");
  EXPECT_EQ(FormatBytes(1288490189), "1.2 GiB");
  EXPECT_EQ(FormatBytes(5ull << 40), "5.0 TiB");
  EXPECT_EQ(FormatCount(0), "0");
  EXPECT_EQ(FormatCount(999), "999");
  EXPECT_EQ(FormatCount(1000), "1,000");
  EXPECT_EQ(FormatCount(1234567), "1,234,567");
  EXPECT_EQ(FormatDuration(42), "42.0 s");
  EXPECT_EQ(FormatDuration(210), "3.5 min");
  EXPECT_EQ(FormatDuration(30 * 86400), "30.0 d");
}

TEST(ToolsUnits, RoundTripOfPrintedSizes) {
  // What we print, admins paste back: "1.2 GiB" parses (with the space).
  EXPECT_EQ(*ParseSize("1.0 KiB"), 1024u);
}

}  // namespace
}  // namespace pdm::tools
