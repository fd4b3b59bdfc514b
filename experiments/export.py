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

from experiments import tracking
from experiments.variants import adapter_for, load_program, prompt_template, rendered_prompt, variant_of


def export_run(run: Any, out: Path, lm: Any | None) -> dict[str, Any]:
    """Write the export files for a variant run (from :func:`tracking.find_variant_run`) and register its
    prompt; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    params = run.data.params
    variant = variant_of(params)
    program = load_program(variant, run.info.run_id)
    program.save(str(out / "program.json"), save_program=False)
    messages = adapter_for(variant.adapter).format(program.predict.signature, program.predict.demos,
                                                    {"review": "{review}", "k": "{k}"})
    (out / "messages.json").write_text(json.dumps(messages, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    prompt_text = rendered_prompt(program, variant.adapter, lm)
    (out / "prompt.md").write_text(
        f"# {variant.name}\n\nThe prompt of the `predict` predictor exactly as the model sees it "
        f"({params.get('lm')}), demos included; `{{review}}` marks the input.\n\n```text\n{prompt_text}\n```\n",
        encoding="utf-8")
    metrics = {k: v for k, v in run.data.metrics.items() if not k.endswith(("_n", "_excluded"))}
    name = f"selfx-{params['program']}".replace("_", "-")
    prompt_uri = tracking.register_prompt(name, prompt_template(program, variant.adapter),
                                          message=f"exported from run {run.info.run_id}",
                                          tags={"source_run": run.info.run_id, "variant": variant.name})
    readme = [f"# {variant.name}", "", f"Exported from MLflow run `{run.info.run_id}`; registered as prompt "
              f"`{prompt_uri}`.", "", "| metric | value |", "|---|---|"]
    readme += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())]
    readme += ["", "Load it back:", "", "```python", "from programs.self_explain import SentimentProgram",
               f"program = SentimentProgram({params['program']!r}, value_mode={variant.value_mode!r}, "
               f"decision={variant.decision!r})", "program.load('program.json')", "```",
               "", "`messages.json` is the same prompt as OpenAI chat messages with `{review}` to fill in."]
    (out / "README.md").write_text("\n".join(readme) + "\n", encoding="utf-8")
    return {"run_id": run.info.run_id, "variant": variant.name, "prompt": prompt_uri,
            "files": sorted(p.name for p in out.iterdir())}
