"""The autonomous agent and the learning loop.

- `rules`: the halting rules, configured per policy profile, each a pure judgement of figures;
- `halts`: the agent's kill switches engaged and released on those verdicts, never anyone else's;
- `config`: config proposals announced on `audit`, and the watcher services re-read config with;
- `bandit`: Thompson sampling over the Signal Modifier's ensemble weights, with guardrails;
- `replay`: counterfactuals of new weights over recent trades and of a candidate profile over
  yesterday's intents;
- `policy`: the active profile's rules, proposals under them, one learning step;
- `reoptimize`: the weekly sweeps on recent lake data, proposed as system config.

The pipeline service that runs them is `tradeos_lab.pipeline.services.agent`.
"""
