# ROS 2 from PyPI wheels: the wheels were built in a manylinux container, so
# imported targets such as std_msgs::std_msgs__rosidl_generator_py carry include
# directories under /opt/python/... that do not exist on this machine. Point
# them at this interpreter's Python and NumPy headers. A regular ROS install has
# no such paths, and then nothing changes.
function(fer_ros_fix_wheel_include_dirs)
  get_property(_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  set(_python_found FALSE)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs OR NOT "${_dirs}" MATCHES "/opt/python/")
      continue()
    endif()
    if(NOT _python_found)
      find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
      set(_python_found TRUE)
    endif()
    set(_fixed_dirs "")
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^/opt/python/")
        list(APPEND _fixed_dirs ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
      else()
        list(APPEND _fixed_dirs "${_dir}")
      endif()
    endforeach()
    list(REMOVE_DUPLICATES _fixed_dirs)
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed_dirs}")
  endforeach()
endfunction()

# rosidl_generator_py adds the Python and NumPy headers to the PUBLIC include
# directories of <package>__rosidl_generator_py. With the virtual environment
# inside the source tree (setup.sh makes .venv there) CMake refuses to export
# paths under the source directory, so keep them for the build only; packages
# that use the exported target find their own Python headers.
function(fer_ros_build_only_source_include_dirs target)
  get_target_property(_dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
  if(NOT _dirs)
    return()
  endif()
  set(_fixed_dirs "")
  foreach(_dir IN LISTS _dirs)
    string(FIND "${_dir}" "${CMAKE_SOURCE_DIR}/" _position)
    if(_position EQUAL 0)
      list(APPEND _fixed_dirs "$<BUILD_INTERFACE:${_dir}>")
    else()
      list(APPEND _fixed_dirs "${_dir}")
    endif()
  endforeach()
  set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed_dirs}")
endfunction()
