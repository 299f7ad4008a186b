#include "tools/units.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace pdm::tools {
namespace {

// Splits "1.5GiB" into 1.5 and "gib" (lower-cased). Only digits and one '.'
// make the number; a leading sign is refused because no unit here is signed.
Status SplitNumber(std::string_view s, std::string_view what, double* num, std::string* suffix) {
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  size_t start = i;
  bool dot = false;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || (s[i] == '.' && !dot))) {
    if (s[i] == '.') dot = true;
    ++i;
  }
  std::string digits(s.substr(start, i - start));
  if (digits.empty() || digits == ".") return InvalidArgument(std::string(what) + ": not a number: '" + std::string(s) + "'");
  // strtod, not stod: 400 digits must be "too large", not an exception
  // that ends the tool. Overflow gives HUGE_VAL, which the callers refuse.
  *num = std::strtod(digits.c_str(), nullptr);
  suffix->clear();
  for (; i < s.size(); ++i) {
    if (std::isspace(static_cast<unsigned char>(s[i]))) continue;
    suffix->push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(s[i]))));
  }
  return Status::Ok();
}

}  // namespace

Result<uint64_t> ParseSize(std::string_view s) {
  double num = 0;
  std::string suf;
  PDM_RETURN_IF_ERROR(SplitNumber(s, "size", &num, &suf));
  if (!suf.empty() && suf.back() == 'b') suf.pop_back();
  if (!suf.empty() && suf.back() == 'i') suf.pop_back();
  int shift = 0;
  if (suf.empty()) shift = 0;
  else if (suf == "k") shift = 10;
  else if (suf == "m") shift = 20;
  else if (suf == "g") shift = 30;
  else if (suf == "t") shift = 40;
  else if (suf == "p") shift = 50;
  else if (suf == "e") shift = 60;
  else return InvalidArgument("size: unknown suffix in '" + std::string(s) + "' (use k, M, G, T, P, E)");
  const double v = std::round(std::ldexp(num, shift));
  if (!(v < 18446744073709551616.0)) return InvalidArgument("size: too large: '" + std::string(s) + "'");
  // A direct conversion: llround() goes through long long and has no value
  // for 8E..16E, while every double below 2^64 converts to uint64_t exactly.
  return static_cast<uint64_t>(v);
}

Result<int64_t> ParseDuration(std::string_view s) {
  double num = 0;
  std::string suf;
  PDM_RETURN_IF_ERROR(SplitNumber(s, "duration", &num, &suf));
  double mult = 1;
  if (suf.empty() || suf == "s" || suf == "sec") mult = 1;
  else if (suf == "m" || suf == "min") mult = 60;
  else if (suf == "h") mult = 3600;
  else if (suf == "d") mult = 86400;
  else if (suf == "w") mult = 7 * 86400.0;
  else if (suf == "y") mult = 365 * 86400.0;
  else return InvalidArgument("duration: unknown suffix in '" + std::string(s) + "' (use s, m, h, d, w, y)");
  const double v = num * mult;
  if (!(v < 9.2e18)) return InvalidArgument("duration: too large: '" + std::string(s) + "'");
  return static_cast<int64_t>(std::llround(v));
}

Result<double> ParsePercent(std::string_view s) {
  double num = 0;
  std::string suf;
  PDM_RETURN_IF_ERROR(SplitNumber(s, "percentage", &num, &suf));
  if (suf == "%") {
    num /= 100.0;
  } else if (!suf.empty()) {
    return InvalidArgument("percentage: unexpected '" + suf + "' in '" + std::string(s) + "'");
  } else if (!(s.find('.') != std::string_view::npos && num <= 1.0)) {
    num /= 100.0;  // a bare "90" is a percentage, "0.9" a fraction
  }
  if (num > 1.0) return InvalidArgument("percentage: above 100%: '" + std::string(s) + "'");
  return num;
}

std::string FormatBytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 6) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  return buf;
}

std::string FormatCount(uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  const size_t lead = digits.size() % 3;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (i % 3) == lead) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

std::string FormatDuration(double seconds) {
  char buf[32];
  if (seconds < 60) std::snprintf(buf, sizeof buf, "%.1f s", seconds);
  else if (seconds < 3600) std::snprintf(buf, sizeof buf, "%.1f min", seconds / 60);
  else if (seconds < 86400) std::snprintf(buf, sizeof buf, "%.1f h", seconds / 3600);
  else std::snprintf(buf, sizeof buf, "%.1f d", seconds / 86400);
  return buf;
}

}  // namespace pdm::tools
