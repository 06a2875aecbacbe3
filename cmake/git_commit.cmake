# Run at build time: writes OUT from IN with the current short git commit (plus "-dirty").
# configure_file only touches OUT when the text changes, so unchanged commits rebuild nothing.
execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY "${SRC}"
                OUTPUT_VARIABLE TESSERA_GIT_COMMIT OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE rc ERROR_QUIET)
if(NOT rc EQUAL 0)
  set(TESSERA_GIT_COMMIT "unknown")
else()
  execute_process(COMMAND git status --porcelain --untracked-files=no WORKING_DIRECTORY "${SRC}"
                  OUTPUT_VARIABLE dirty ERROR_QUIET)
  if(dirty)
    set(TESSERA_GIT_COMMIT "${TESSERA_GIT_COMMIT}-dirty")
  endif()
endif()
configure_file("${IN}" "${OUT}" @ONLY)
