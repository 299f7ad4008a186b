// main() of one HSM tool; PDM_HSM_TOOL ("migrate", ..., "state") is set per
// executable in hsm.cmake, so the six tools share pdm_hsm_tool.cc compiled
// once.
#include <string_view>

namespace pdm::tools {
int HsmToolMain(std::string_view tool, int argc, char** argv);
}

int main(int argc, char** argv) { return pdm::tools::HsmToolMain(PDM_HSM_TOOL, argc, argv); }
