include(CMakePackageConfigHelpers)

install(TARGETS lowrank EXPORT lowrankTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY include/lowrank DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT lowrankTargets NAMESPACE lowrank:: FILE lowrankTargets.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/lowrank)
configure_package_config_file(cmake/lowrankConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/lowrankConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/lowrank)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/lowrankConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/lowrankConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/lowrankConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/lowrank)
