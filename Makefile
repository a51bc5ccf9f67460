# hartvm: `make run` runs `uname -a` in a Debian guest, `make demo` boots a bare-metal demo, `make test` runs the tests, `make bench` the benchmarks.
# Each target creates .venv and installs what it needs on a fresh machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NEED := scripts/need-debian-packages
CROSS_TOOLS := riscv64-linux-gnu-gcc=gcc-riscv64-linux-gnu riscv64-linux-gnu-objdump=binutils-riscv64-linux-gnu dtc=device-tree-compiler
QEMU := qemu-system-riscv64=qemu-system-misc
IMAGE_TOOLS := mmdebstrap=mmdebstrap fakeroot=fakeroot mke2fs=e2fsprogs
NETWORK := passt=passt
DEBUGGER := gdb-multiarch=gdb-multiarch
BROWSER := chromium=chromium chromedriver=chromium-driver
CONSOLE := hartvm/frontends/console_web

.PHONY: run demo test bench toolchain qemu images network debugger console browser clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

toolchain:
	@$(NEED) $(CROSS_TOOLS)

qemu:
	@$(NEED) $(QEMU)

build/hello.elf: examples/hello.c baremetal/crt0.S baremetal/runtime.c baremetal/runtime.h baremetal/link.ld | toolchain
	$(PYTHON) baremetal/build.py -o $@ examples/hello.c

run: $(VENV)/.installed
	$(BIN)/hartvm run -- uname -a

demo: $(VENV)/.installed build/hello.elf
	$(BIN)/hartvm boot --bios none --kernel build/hello.elf

images:
	@$(NEED) $(IMAGE_TOOLS)

network:
	@$(NEED) $(NETWORK)

debugger:
	@$(NEED) $(DEBUGGER)

# The browser console's xterm.js, from the npm registry as package-lock.json pins it.
console: $(CONSOLE)/node_modules/.package-lock.json

$(CONSOLE)/node_modules/.package-lock.json: $(CONSOLE)/package.json $(CONSOLE)/package-lock.json
	@$(NEED) npm=npm
	cd $(CONSOLE) && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

browser:
	@$(NEED) $(BROWSER)

test: $(VENV)/.installed toolchain qemu images network debugger console browser
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed toolchain qemu network console browser
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf build
