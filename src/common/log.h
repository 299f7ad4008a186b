// Logging setup. Code logs with spdlog directly (spdlog::info/warn/error);
// this header only names the process (rank) in every line and sets the level.
#pragma once

#include <string>

namespace pdm {

// level: "trace", "debug", "info", "warn", "error". Unknown values -> "info".
void InitLogging(const std::string& name, const std::string& level);

}  // namespace pdm
