# Admin tools over pdm_tools (src/tools): pdm-walk, pdm-purge.
if(NOT TARGET pdm_tools)
  return()
endif()

add_executable(pdm-walk ${CMAKE_CURRENT_LIST_DIR}/pdm_walk.cc)
target_link_libraries(pdm-walk PRIVATE pdm_tools CLI11::CLI11)
add_executable(pdm-purge ${CMAKE_CURRENT_LIST_DIR}/pdm_purge.cc)
target_link_libraries(pdm-purge PRIVATE pdm_tools CLI11::CLI11)

# The MPI tests run these executables; pdm_mpi_tests is defined later (tests/),
# so the dependency is added once the whole tree has been read.
function(pdm_tools_add_test_deps)
  if(TARGET pdm_mpi_tests)
    add_dependencies(pdm_mpi_tests pdm-walk pdm-purge)
  endif()
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL pdm_tools_add_test_deps)
