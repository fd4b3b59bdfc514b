"""Which part of E-P's answer costs the label its ranking? An ablation outside the programs.

Decodes E-P on Gemma-3-270M (the paper's instructions, teacher demos) with the answer written in one of
several styles (JSON as selfx writes it, plain text lines, prediction only; ``jsonR`` / ``textR``: the
review restated between the explanation and the label) and value grids (21 or 5 numbers, polarity
words), and reads the label's log-odds at its slot. Prints one JSON line per
``style:grid``: batch-rule accuracy, AUC, median seconds per review, answer tokens.

    python docs/measurements/ep_answer_formats.py STYLE:GRID[,STYLE:GRID...] [N] [DEMOS] [occlusion|self]
    e.g. python docs/measurements/ep_answer_formats.py json:21,json:polarity,text:5,P:none 100 8
"""
import json
import sys
import time

import dspy
import numpy as np

from metrics.accuracy import auc
from programs.data import load_examples
from programs.demos import build_demos
from programs.lean_adapter import LeanAdapter
from programs.lm import make_lm
from programs.signatures import PAPER_INSTRUCTIONS
from programs.slot_decoder import SIGNED_GRID, Fixed, Slot, carry_expected, decode, greedy

N = int(sys.argv[2]) if len(sys.argv) > 2 else 100
SOURCE = sys.argv[4] if len(sys.argv) > 4 else "occlusion"
lm = make_lm("local", cache=False)
engine = lm.engine
with dspy.context(lm=lm, adapter=LeanAdapter()):
    # teacher demos (the model's occlusion) by default; "self": E-P's own bootstrapped polarity answers
    demos = build_demos("EP", int(sys.argv[3]) if len(sys.argv) > 3 else 8, lm=lm, source=SOURCE, seed=0,
                        format="polarity" if SOURCE == "self" else "numeric")
examples = load_examples("sst2", n=N)
GRID5 = ("-1.0", "-0.5", "0.0", "0.5", "1.0")
POL = ("negative", "neutral", "positive")

def polar(v): return v if isinstance(v, str) else "neutral" if abs(v) < 0.25 else ("positive" if v > 0 else "negative")
def five(v): return min(GRID5, key=lambda g: abs(float(g) - v))
def value_text(v, grid):
    return polar(v) if grid == "polarity" else (five(v) if grid == "5" else f"{v:.1f}")

def render_answer(style, grid, pairs, label, conf, review):
    if style in ("json", "jsonR"):
        vals = [[w, value_text(v, grid) if grid == "polarity" else float(value_text(v, grid))] for w, v in pairs]
        answer = {"explanation": vals} | ({"review": review} if style == "jsonR" else {})
        return json.dumps(answer | {"label": label, "confidence": conf}, ensure_ascii=False)
    if style == "P":
        return f"Sentiment: {label}\nConfidence: {conf}"
    key = "Label" if style == "text" else "Sentiment"
    words = ", ".join(f"{w} = {value_text(v, grid)}" for w, v in pairs)
    again = f"\nReview: {review}" if style == "textR" else ""
    return f"Words: {words}{again}\n{key}: {label}\nConfidence: {conf}"

def skeleton(style, grid, tokens, review):
    opts = POL if grid == "polarity" else (GRID5 if grid == "5" else SIGNED_GRID)
    segs = []
    if style in ("json", "jsonR"):
        segs.append(Fixed('{"explanation": ['))
        for i, w in enumerate(tokens):
            segs.append(Fixed((", " if i else "") + "[" + json.dumps(w, ensure_ascii=False) + ", " + ('"' if grid == "polarity" else "")))
            segs.append(Slot("enum" if grid == "polarity" else "number", opts, closing='"]' if grid == "polarity" else "]"))
        segs.append(Fixed("], " + ('"review": ' + json.dumps(review, ensure_ascii=False) + ", " if style == "jsonR" else "") + '"label": "'))
        segs.append(Slot("enum", ("negative", "positive"), closing='"'))
    elif style == "P":
        segs.append(Fixed("Sentiment: "))
        segs.append(Slot("enum", ("negative", "positive"), closing="\n"))
    else:
        segs.append(Fixed("Words: "))
        for i, w in enumerate(tokens):
            segs.append(Fixed((", " if i else "") + f"{w} = "))
            segs.append(Slot("enum" if grid == "polarity" else "number", opts, closing=""))
        segs.append(Fixed((f"\nReview: {review}" if style == "textR" else "") + ("\nLabel: " if style == "text" else "\nSentiment: ")))
        segs.append(Slot("enum", ("negative", "positive"), closing="\n"))
    merged = []
    for s in segs:
        if isinstance(s, Fixed) and merged and isinstance(merged[-1], Fixed):
            merged[-1] = Fixed(merged[-1].text + s.text)
        else:
            merged.append(s)
    return merged

def system(style, grid):
    if style == "P":
        return PAPER_INSTRUCTIONS["P"] + "\nAnswer in lines: Sentiment: negative or positive; Confidence: a number"
    key = "Label" if style == "text" else "Sentiment"
    review = {"jsonR": '"review": the review again, ', "textR": "Review: the review again; "}.get(style, "")
    fmt = ('Answer in JSON: {"explanation": list of [word, value], ' + review + '"label": "negative" or "positive", "confidence": float}'
           if style.startswith("json") else f"Answer in lines: Words: word = value, ...; {review}{key}: negative or positive; Confidence: a number")
    return PAPER_INSTRUCTIONS["EP"] + "\n" + fmt

def run(style, grid):
    msgs = [{"role": "system", "content": system(style, grid)}]
    for d in demos:
        msgs.append({"role": "user", "content": d.review})
        msgs.append({"role": "assistant", "content": render_answer(style, grid, [(w, v) for w, v in d.explanation], d.label, 0.9, d.review)})
    odds, secs, tok = [], [], []
    for e in examples:
        prompt = engine.prompt_tokens(msgs + [{"role": "user", "content": e.text}])
        segs = skeleton(style, grid, e.text.split(), e.text)
        t = time.perf_counter()
        with engine._loaded().lock:
            choose = carry_expected(greedy) if grid != "polarity" else greedy
            text, readings = decode(segs, prompt, tokenize=engine.tokenize_text, logits_at=lambda x: engine._eval_to(x, copy=False), choose=choose)
        secs.append(time.perf_counter() - t)
        label_slot = readings[-1]
        lp = dict(zip(label_slot.options, label_slot.logprobs))
        odds.append(lp["positive"] - lp["negative"])
        tok.append(len(engine.tokenize_text(text)))
    gold = [e.label for e in examples]
    bias = -np.mean(odds)
    acc = np.mean([(o + bias > 0) == g for o, g in zip(odds, gold)])
    return {"style": style, "grid": grid, "n": N, "demo_source": SOURCE, "batch_accuracy": round(float(acc), 3), "auc": round(auc(odds, gold), 3),
            "s_per_review": round(float(np.median(secs)), 2), "answer_tokens": round(float(np.mean(tok)), 1)}

for style, grid in [tuple(x.split(":")) for x in sys.argv[1].split(",")]:
    print(json.dumps(run(style, grid)), flush=True)
