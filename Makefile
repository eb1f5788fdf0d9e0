# Two commands on a fresh machine:  `make demo` (set-up + distil + evaluate + report)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO_OUT ?= runs/demo

.PHONY: setup data demo test lint bench-speed clean

setup: $(VENV)/.installed

# torch is pinned here (the CPU wheel on this machine) in the same pip command as the package,
# so pip never pulls a CUDA build; the package itself only asks for torch>=2.3.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0 -e ".[test]"
	touch $@

# Fashion-MNIST from Debian when it can be installed; otherwise the demo uses scikit-learn's digits.
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "Fashion-MNIST found"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	  (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1) || \
	  echo "could not install dataset-fashion-mnist; the demo falls back to scikit-learn digits"; \
	else echo "no apt-get as root; the demo falls back to scikit-learn digits"; fi

demo: setup data
	$(VENV)/bin/distillset demo --out $(DEMO_OUT)

test: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check src benchmarks tests
	$(VENV)/bin/lint-imports

bench-speed: setup
	$(PY) benchmarks/dm_speed.py --dataset fashion-mnist --ipc 10 --batch-real 256 --iterations 10 --rounds 4 --compile

clean:
	rm -rf $(VENV) runs .pytest_cache
