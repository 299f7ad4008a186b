// Human units for the tools: sizes ("10G", "512k", "1.5TiB"), durations
// ("30d", "12h", "90s", "2w"), percentages ("90%"), and their printed forms
// ("1.2 GiB", "3.0 d"). One parser for every tool, so "10G" means the same
// thing in pdm-purge, pdm-walk and a policy file.
//
// Size suffixes are binary (k = 1024) whether or not the "i" is written,
// because admins type "10G" for quota-style numbers; "B" alone is bytes.
// Durations without a suffix are seconds.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pdm::tools {

// "0", "123", "10k", "10K", "10KiB", "10kb", "1.5G", "2T", "1P". Rejects
// negatives, overflow, unknown suffixes and empty input (InvalidArgument).
Result<uint64_t> ParseSize(std::string_view s);
// "30d", "12h", "45m", "90s", "2w", "1y" (365 d), "3600" (seconds); decimals
// allowed ("1.5d"). Returns seconds.
Result<int64_t> ParseDuration(std::string_view s);
// "90%", "90", "0.9" (a fraction when <= 1 and it has a '.'), into [0, 1].
Result<double> ParsePercent(std::string_view s);

// 1234 -> "1.2 KiB"; below 1 KiB: "999 B". One decimal above KiB.
std::string FormatBytes(uint64_t bytes);
// 1234567 -> "1,234,567".
std::string FormatCount(uint64_t n);
// seconds -> "42 s", "3.5 min", "2.0 h", "30.0 d".
std::string FormatDuration(double seconds);

}  // namespace pdm::tools
