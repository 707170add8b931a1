# The two commands: `make run` (the assistant, local chat) and `make test` (the test suite).
PY := .venv/bin/python
GUICHET := .venv/bin/guichet
export SQLALCHEMY_SILENCE_UBER_WARNING := 1
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: setup train run test test-deps eval eval-heldout stories nlu-report bench soak soak-servers data-bench lock clean

setup:
	@bash scripts/setup.sh

train: setup
	@$(GUICHET) train

run: train
	@$(GUICHET) run

test-deps:
	@bash scripts/test-deps.sh

test: test-deps train
	@$(PY) -m pytest $(PYTEST_ARGS)

eval: train
	@$(GUICHET) eval ../shared/reference/dev_cases.yml --json var/eval-dev.json

# The held-out sets written blind (README "What the assistant understands"): JSON in var/eval-*.json
eval-heldout: train
	@for set in blind_page_comments blind_private_messages blind_round2 blind_round3 blind_round4 danger_tuning; do \
		echo "== $$set"; $(GUICHET) eval tests/cases/$$set.yml --json var/eval-$$set.json | grep -v "^FAIL"; done

stories: train
	@.venv/bin/rasa test core --stories tests/test_stories.yml --out var/stories-results --fail-on-prediction-errors > var/stories.log 2>&1 && tail -5 var/stories.log

nlu-report: setup
	@.venv/bin/rasa test nlu --nlu data/nlu --cross-validation --folds 3 --out var/nlu-report > var/nlu-report.log 2>&1; tail -5 var/nlu-report.log

# Speed of the whole assistant vs stock Rasa (README "Speed"); about 12 minutes the first time.
bench: test-deps setup
	@$(PY) -m bot.bench

# Soak on loopback: 5,000 messages in 300 concurrent conversations through the REST channel,
# counts checked in the database (README "Reliability"); about 20 minutes on 2 cores.
soak: train
	@$(PY) -m bot.soak --messages 5000 --conversations 300 --json var/soak.json

# Costs as the data grows (README "Costs as the data grows"): a large town's year in a throw-away
# PostgreSQL, then a tenth of it; staff pages, privacy commands, a citizen message. About 20 minutes.
# Soak across several servers (README "Several servers"): 20,000 messages, 500 conversations at once,
# 2 Rasa + 2 action servers behind nginx on PostgreSQL and Redis, one of each killed mid-run.
soak-servers: test-deps train
	@$(PY) -m bot.soak --messages 20000 --conversations 500 --servers 2 --action-servers 2 --kill --json var/soak-servers.json

data-bench: train
	@$(PY) -m bot.data_bench --scale 1.0 --also 0.1 --json var/data-bench.json

lock:
	@.venv/bin/uv pip compile pyproject.toml --extra test --python .venv/bin/python -o requirements.lock --quiet --no-header
	@sed -i '1i # Lock file: regenerate with `make lock` (uv pip compile pyproject.toml --extra test, Python 3.10).' requirements.lock

clean:
	rm -rf var models .pytest_cache
