# Maglev ring builder: a plain shared library (no Python headers) that
# amphora_agent/dataplane/maglev.py loads with ctypes.
#
# Included by the top-level Makefile, which depends on $(MAGLEV_LIB).
# Standalone: make -f mk/maglev.mk amphora_agent/dataplane/obj/libmaglev.so

# Keep the including Makefile's default goal: a fragment's first rule would
# otherwise become it.  Run on its own, default to building the library.
maglev_saved_default_goal := $(.DEFAULT_GOAL)
ifeq ($(words $(MAKEFILE_LIST)),1)
maglev_saved_default_goal := maglev
endif

MAGLEV_SRC := amphora_agent/dataplane/maglev.c
MAGLEV_LIB := amphora_agent/dataplane/obj/libmaglev.so
# Host compiler on purpose: $(CC) may be set up for BPF by the includer.
MAGLEV_CC ?= cc
MAGLEV_CFLAGS := -O2 -fPIC -shared -Wall -Wextra -Werror

# The fragment itself is a prerequisite so that changed flags rebuild.
$(MAGLEV_LIB): $(MAGLEV_SRC) mk/maglev.mk
	@mkdir -p $(@D)
	$(MAGLEV_CC) $(MAGLEV_CFLAGS) -o $@ $<

.PHONY: maglev maglev-clean
maglev: $(MAGLEV_LIB)

maglev-clean:
	rm -f $(MAGLEV_LIB)

.DEFAULT_GOAL := $(maglev_saved_default_goal)
