# `cmake --install BUILD --prefix PREFIX` installs the library, the CLI, the headers and a CMake
# package, so that a separate project can do
#   find_package(lowrank REQUIRED)
#   target_link_libraries(app PRIVATE lowrank::lowrank)
# (examples/custom_loop; scripts/test_install.sh checks it end to end).
include(CMakePackageConfigHelpers)

set(LOWRANK_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/lowrank)

install(TARGETS lowrank EXPORT lowrankTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/lowrank DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(EXPORT lowrankTargets NAMESPACE lowrank:: FILE lowrankTargets.cmake DESTINATION ${LOWRANK_CMAKE_DIR})
configure_package_config_file(cmake/lowrankConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/lowrankConfig.cmake
  INSTALL_DESTINATION ${LOWRANK_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/lowrankConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/lowrankConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/lowrankConfigVersion.cmake
        DESTINATION ${LOWRANK_CMAKE_DIR})
