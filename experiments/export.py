"""``selfx export``: the best run (by a metric) or a chosen run, as files a person can read and reuse.

The export directory holds ``program.json`` (DSPy state plus selfx settings and calibration),
``prompt.md`` (the rendered prompt with its demos), ``messages.json`` (an OpenAI chat-messages
template with a ``{review}`` placeholder) and a README; the prompt is also registered in the
MLflow prompt registry with tags linking it to its source run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.run import adapter_for, rendered_prompt
from experiments.tracking import tracking_uri
from programs.self_explain import SentimentProgram


class ExportError(ValueError):
    """No run to export, or a run without the artifacts an export needs."""


def find_run(experiment: str, *, metric: str = "accuracy", run_id: str | None = None, uri: str | None = None) -> Any:
    """A variant run: the given one, or the nested run with the highest ``metric``."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri(uri))
    client = MlflowClient()
    if run_id:
        return client.get_run(run_id)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ExportError(f"no MLflow experiment {experiment!r}; run `selfx run` first or pass --experiment")
    runs = client.search_runs([found.experiment_id], filter_string="tags.`selfx.variant` != ''",
                              order_by=[f"metrics.`{metric}` DESC"], max_results=50)
    runs = [r for r in runs if metric in r.data.metrics]
    if not runs:
        raise ExportError(f"no variant run in {experiment!r} has the metric {metric!r}")
    return runs[0]


def load_program(run: Any, folder: Path) -> SentimentProgram:
    """Rebuild a run's program from its params and its saved program.json."""
    from mlflow import MlflowClient

    params = run.data.params
    path = Path(MlflowClient().download_artifacts(run.info.run_id, "program.json", str(folder)))
    program = SentimentProgram(params["program"], value_mode=params.get("value_mode", "sample"),
                               decision=params.get("decision", "generated"))
    program.load(str(path))
    return program


def export_run(run: Any, out: Path, lm: Any) -> dict[str, Any]:
    """Write the export files and register the prompt; returns what was written."""
    import mlflow

    from experiments.config import Variant

    out.mkdir(parents=True, exist_ok=True)
    program = load_program(run, out)
    params = run.data.params
    variant = Variant(program=params["program"], demos=int(params.get("demos", 0)),
                      decision=params.get("decision", "generated"), value_mode=params.get("value_mode", "sample"),
                      adapter=params.get("adapter", "lean"))
    program.save(str(out / "program.json"), save_program=False)
    messages = adapter_for(variant.adapter).format(program.predict.signature, program.predict.demos,
                                                    {"review": "{review}", "k": "{k}"})
    (out / "messages.json").write_text(json.dumps(messages, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    prompt_text = rendered_prompt(program, variant, lm)
    (out / "prompt.md").write_text(
        f"# {variant.name}\n\nThe prompt of the `predict` predictor exactly as the model sees it "
        f"({params.get('lm')}), demos included; `{{review}}` marks the input.\n\n```text\n{prompt_text}\n```\n",
        encoding="utf-8")
    metrics = {k: v for k, v in run.data.metrics.items() if not k.endswith(("_n", "_excluded"))}
    template = [{"role": m["role"], "content": m["content"].replace("{review}", "{{review}}").replace("{k}", "{{k}}")}
                for m in messages]
    name = f"selfx-{params['program']}".replace("_", "-")
    version = mlflow.genai.register_prompt(name=name, template=template,
                                           commit_message=f"exported from run {run.info.run_id}",
                                           tags={"source_run": run.info.run_id, "variant": variant.name})
    readme = [f"# {variant.name}", "", f"Exported from MLflow run `{run.info.run_id}`; registered as prompt "
              f"`prompts:/{name}/{version.version}`.", "", "| metric | value |", "|---|---|"]
    readme += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())]
    readme += ["", "Load it back:", "", "```python", "from programs.self_explain import SentimentProgram",
               f"program = SentimentProgram({params['program']!r}, value_mode={variant.value_mode!r}, "
               f"decision={variant.decision!r})", "program.load('program.json')", "```",
               "", "`messages.json` is the same prompt as OpenAI chat messages with `{review}` to fill in."]
    (out / "README.md").write_text("\n".join(readme) + "\n", encoding="utf-8")
    return {"run_id": run.info.run_id, "variant": variant.name, "prompt": f"prompts:/{name}/{version.version}",
            "files": sorted(p.name for p in out.iterdir())}
