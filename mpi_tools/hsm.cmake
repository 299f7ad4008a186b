# The HSM tools (issue 5 item 6): pdm-migrate, pdm-archive, pdm-release,
# pdm-recall, pdm-remove, pdm-state. DMAPI clients of the local node agent
# (libdmapi.so) speaking the request protocol of src/hsm/protocol.h.
if(NOT TARGET pdm_tools OR NOT TARGET pdm_hsm)
  return()
endif()

# The tools' side of the protocol; pdm-purge links it too (--release-only).
add_library(pdm_hsm_client STATIC ${CMAKE_SOURCE_DIR}/src/tools/hsm_client.cc)
target_link_libraries(pdm_hsm_client PUBLIC dmapi pdm_hsm pdm_tools)

# Compiled once, linked six times.
add_library(pdm_hsm_tool OBJECT ${CMAKE_CURRENT_LIST_DIR}/pdm_hsm_tool.cc)
target_link_libraries(pdm_hsm_tool PUBLIC pdm_hsm_client CLI11::CLI11)

set(PDM_HSM_TOOLS migrate archive release recall remove cancel state)
foreach(t ${PDM_HSM_TOOLS})
  add_executable(pdm-${t} ${CMAKE_CURRENT_LIST_DIR}/pdm_hsm_main.cc)
  target_compile_definitions(pdm-${t} PRIVATE PDM_HSM_TOOL="${t}")
  target_link_libraries(pdm-${t} PRIVATE pdm_hsm_tool)
endforeach()

# pdm-purge (tools.cmake, read after this file) gets its release hook from
# the client; the MPI tests run the tools. Both targets exist only once the
# whole tree has been read.
function(pdm_hsm_tools_late)
  if(TARGET pdm-purge)
    target_link_libraries(pdm-purge PRIVATE pdm_hsm_client)
    target_compile_definitions(pdm-purge PRIVATE PDM_PURGE_WITH_HSM)
  endif()
  if(TARGET pdm_mpi_tests)
    # The list again: this runs in the top directory's scope.
    foreach(t migrate archive release recall remove cancel state)
      add_dependencies(pdm_mpi_tests pdm-${t})
    endforeach()
  endif()
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL pdm_hsm_tools_late)
