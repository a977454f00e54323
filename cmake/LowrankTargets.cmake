# lowrank_use_pch(target): reuse the library's precompiled torch header so that each
# translation unit does not re-parse <torch/torch.h> (~20 s each on 2 cores).
# Executables are compiled with -fPIC (not CMake's -fPIE) so their flags match the header's.
function(lowrank_use_pch target)
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
    target_compile_options(${target} PRIVATE -fPIC)
  endif()
  if(LOWRANK_USE_PCH)
    target_precompile_headers(${target} REUSE_FROM lowrank_pch)
  endif()
endfunction()
