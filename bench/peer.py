#!/usr/bin/env python3
"""CPU peer benchmark for fgclip-rs: the official-architecture towers in PyTorch (HF transformers) and in
ONNX Runtime, with random weights at the real sizes (nothing is downloaded).

Prints one JSON object per line per measurement on stdout:
  {"impl","workload","batch","threads","items_per_s","latency_ms_median","iterations","peak_rss_mib",
   "flops_per_item","versions":{...}, ...extra fields}
or, where a combination cannot be run (e.g. an ONNX export fails),
  {"impl","workload","batch","threads","error": "...", ...}

Each measurement runs in its own process (several --workload/--batch values fork one child per
combination), so peak RSS belongs to that measurement alone. The ONNX Runtime measurement process imports
onnxruntime and numpy only (no torch); the export runs once, in a separate process, and is cached under
bench/.cache/.

See bench/README.md for the commands.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata as md
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE_DIR = os.environ.get("FGCLIP_PEER_CACHE", os.path.join(HERE, ".cache"))
OPSET = 18

# ---------------------------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------------------------
# kind: "clip-image" | "clip-text" | "siglip2-image" | "siglip2-text"
WORKLOADS: dict[str, dict] = {
    # FG-CLIP base image tower: CLIP ViT-B/16 @224, projection 512.
    "fgclip-base-image": dict(kind="clip-image", hidden=768, layers=12, heads=12, mlp=3072, act="quick_gelu",
                              patch=16, image=224, proj=512),
    # FG-CLIP large image tower: CLIP ViT-L/14 @336, projection 768.
    "fgclip-large-image": dict(kind="clip-image", hidden=1024, layers=24, heads=16, mlp=4096, act="quick_gelu",
                               patch=14, image=336, proj=768),
    # FG-CLIP base text tower (CLIP text, causal mask, pooled at the first eos), 77 / 248 positions.
    "fgclip-base-text-77": dict(kind="clip-text", vocab=49408, hidden=512, layers=12, heads=8, mlp=2048,
                                act="quick_gelu", seq=77, proj=512),
    "fgclip-base-text-248": dict(kind="clip-text", vocab=49408, hidden=512, layers=12, heads=8, mlp=2048,
                                 act="quick_gelu", seq=248, proj=512),
}
for _n in (256, 576, 1024):
    # FG-CLIP 2 base image tower: SigLIP 2 NaFlex B/16 with its MAP head; position table 16x16 (256),
    # bilinearly resized (antialias) to the input grid.
    WORKLOADS[f"fgclip2-base-image-{_n}"] = dict(kind="siglip2-image", hidden=768, layers=12, heads=12, mlp=3072,
                                                 act="gelu_pytorch_tanh", patch=16, table_patches=256,
                                                 patches=_n)
# One training step of FG-CLIP-base (the H100 reference of issue #5, on the CPU): CLIP ViT-B/16 @224 image
# tower + CLIP text tower at 248 positions (FG-CLIP's long walk), global InfoNCE, AdamW, f32. Items = samples.
WORKLOADS["train-fgclip-base"] = dict(kind="clip-train", hidden=768, layers=12, heads=12, mlp=3072,
                                      act="quick_gelu", patch=16, image=224, proj=512, vocab=49408,
                                      text_hidden=512, text_layers=12, text_heads=8, text_mlp=2048, seq=248)
for _l in (64, 196):
    # FG-CLIP 2 base text tower: SigLIP 2 text (bidirectional, last-token pooling, Linear head 768->768).
    WORKLOADS[f"fgclip2-base-text-{_l}"] = dict(kind="siglip2-text", vocab=256000, hidden=768, layers=12,
                                                heads=12, mlp=3072, act="gelu_pytorch_tanh", seq=_l, proj=768)


def encoder_flops(tokens: int, d: int, f: int, layers: int) -> int:
    """Matmul FLOPs of a pre-LN transformer encoder, 2*M*N*K per GEMM, per item (independent of #heads):
         Q,K,V projections      3 * 2*T*d*d
         attention out proj         2*T*d*d
         scores  Q K^T              2*T*T*d   (summed over heads: h * 2*T*T*(d/h))
         context P V                2*T*T*d
         MLP fc1 + fc2          2 * 2*T*d*f
       per layer = 8*T*d^2 + 4*T*d*f + 4*T^2*d.  Biases, layer norms, softmax, activations are not counted.
       (A causal mask is counted as the full T x T product, as the dense kernels compute it.)"""
    return layers * (8 * tokens * d * d + 4 * tokens * d * f + 4 * tokens * tokens * d)


def flops_per_item(w: dict) -> int:
    d, f, L = w["hidden"], w["mlp"], w["layers"]
    k = w["kind"]
    if k == "clip-image":
        # CLIP ViT: T = (S/P)^2 patches + 1 class token.
        #   patch embedding (conv PxP stride P == GEMM): 2 * (S/P)^2 * (3*P*P) * d
        #   encoder (above) + visual projection on the pooled token: 2 * d * proj
        g = (w["image"] // w["patch"]) ** 2
        return 2 * g * 3 * w["patch"] ** 2 * d + encoder_flops(g + 1, d, f, L) + 2 * d * w["proj"]
    if k == "clip-text":
        # CLIP text: T = L tokens (token/position embeddings are gathers: 0 FLOPs)
        #   encoder + text projection on the pooled (first eos) token: 2 * d * proj
        return encoder_flops(w["seq"], d, f, L) + 2 * d * w["proj"]
    if k == "siglip2-image":
        # SigLIP 2 NaFlex: T = N patches (no class token); patch embedding is a Linear 3*P*P -> d: 2*N*(3P^2)*d
        # (position-table resize is an interpolation, not a GEMM: not counted)
        # MAP head (one probe query over N keys, nn.MultiheadAttention + MLP on one token):
        #   q proj 2*d*d, k/v proj 2 * 2*N*d*d, scores 2*N*d, PV 2*N*d, out proj 2*d*d, MLP 2 * 2*d*f
        n = w["patches"]
        head = 2 * d * d + 4 * n * d * d + 2 * n * d + 2 * n * d + 2 * d * d + 4 * d * f
        return 2 * n * 3 * w["patch"] ** 2 * d + encoder_flops(n, d, f, L) + head
    if k == "siglip2-text":
        # SigLIP 2 text: encoder over L tokens + Linear head on the last token: 2 * d * proj
        return encoder_flops(w["seq"], d, f, L) + 2 * d * w["proj"]
    if k == "clip-train":
        # forward of both towers (as above) times 3: the backward costs two forwards (grad wrt input and weights)
        img = flops_per_item(dict(w, kind="clip-image"))
        txt = flops_per_item(dict(kind="clip-text", hidden=w["text_hidden"], mlp=w["text_mlp"],
                                  layers=w["text_layers"], seq=w["seq"], proj=w["proj"]))
        return 3 * (img + txt)
    raise ValueError(k)


# ---------------------------------------------------------------------------------------------------------
# Inputs (numpy only, so the ORT measurement process needs no torch)
# ---------------------------------------------------------------------------------------------------------
def make_inputs(w: dict, batch: int, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    k = w["kind"]
    if k == "clip-image":
        s = w["image"]
        return {"pixel_values": rng.standard_normal((batch, 3, s, s), dtype=np.float32)}
    if k == "clip-text":
        ids = rng.integers(0, 49406, size=(batch, w["seq"]), dtype=np.int64)
        ids[:, -1] = 49407  # eos at the last position; FG-CLIP pools at the first eos
        return {"input_ids": ids}
    if k == "siglip2-image":
        n = w["patches"]
        side = int(round(math.sqrt(n)))
        assert side * side == n
        return {
            "pixel_values": rng.uniform(-1.0, 1.0, size=(batch, n, 3 * w["patch"] ** 2)).astype(np.float32),
            "pixel_attention_mask": np.ones((batch, n), dtype=np.int32),
            "spatial_shapes": np.tile(np.array([[side, side]], dtype=np.int64), (batch, 1)),
        }
    if k == "siglip2-text":
        return {"input_ids": rng.integers(0, w["vocab"], size=(batch, w["seq"]), dtype=np.int64)}
    if k == "clip-train":
        img = make_inputs(dict(w, kind="clip-image"), batch, seed)
        txt = make_inputs(dict(w, kind="clip-text"), batch, seed + 1)
        return {**img, **txt}
    raise ValueError(k)


def input_names(w: dict) -> list[str]:
    return list(make_inputs(w, 1).keys())


# ---------------------------------------------------------------------------------------------------------
# PyTorch modules
# ---------------------------------------------------------------------------------------------------------
def build_torch_module(w: dict, attn: str):
    """The HF module wrapped so that it takes the inputs positionally and returns one tensor
    (the same wrapper is timed in PyTorch and exported to ONNX)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    k = w["kind"]
    if k == "clip-image":
        cfg = tf.CLIPVisionConfig(hidden_size=w["hidden"], intermediate_size=w["mlp"], projection_dim=w["proj"],
                                  num_hidden_layers=w["layers"], num_attention_heads=w["heads"],
                                  num_channels=3, image_size=w["image"], patch_size=w["patch"],
                                  hidden_act=w["act"], layer_norm_eps=1e-5)
        inner = tf.CLIPVisionModelWithProjection._from_config(cfg, attn_implementation=attn)

        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, pixel_values):
                return self.m(pixel_values=pixel_values).image_embeds

    elif k == "clip-text":
        cfg = tf.CLIPTextConfig(vocab_size=w["vocab"], hidden_size=w["hidden"], intermediate_size=w["mlp"],
                                projection_dim=w["proj"], num_hidden_layers=w["layers"],
                                num_attention_heads=w["heads"], max_position_embeddings=w["seq"],
                                hidden_act=w["act"], layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=49406,
                                eos_token_id=49407)
        inner = tf.CLIPTextModelWithProjection._from_config(cfg, attn_implementation=attn)

        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids):
                return self.m(input_ids=input_ids).text_embeds

    elif k == "siglip2-image":
        cfg = tf.Siglip2VisionConfig(hidden_size=w["hidden"], intermediate_size=w["mlp"],
                                     num_hidden_layers=w["layers"], num_attention_heads=w["heads"],
                                     num_channels=3, patch_size=w["patch"], hidden_act=w["act"],
                                     layer_norm_eps=1e-6, num_patches=w["table_patches"], vision_use_head=True)
        inner = tf.Siglip2VisionModel._from_config(cfg, attn_implementation=attn)

        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, pixel_values, pixel_attention_mask, spatial_shapes):
                return self.m(pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask,
                              spatial_shapes=spatial_shapes).pooler_output

    elif k == "siglip2-text":
        cfg = tf.Siglip2TextConfig(vocab_size=w["vocab"], hidden_size=w["hidden"], intermediate_size=w["mlp"],
                                   num_hidden_layers=w["layers"], num_attention_heads=w["heads"],
                                   max_position_embeddings=w["seq"], hidden_act=w["act"], layer_norm_eps=1e-6,
                                   projection_size=w["proj"], pad_token_id=0, bos_token_id=2, eos_token_id=1)
        inner = tf.Siglip2TextModel._from_config(cfg, attn_implementation=attn)

        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids):
                return self.m(input_ids=input_ids).pooler_output

    else:
        raise ValueError(k)
    mod = Wrap(inner).eval().float()
    for p in mod.parameters():
        p.requires_grad_(False)
    return mod


def build_torch_train(w: dict, attn: str):
    """FG-CLIP-base's two towers + logit scale as HF builds them (CLIPModel's loss: symmetric CE over
    exp(logit_scale)-scaled cosine logits), trainable, with torch's AdamW (foreach, the default on CPU) and
    FG-CLIP's hyper-parameters (betas 0.9/0.999, eps 1e-8, weight decay 0.001)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    vcfg = tf.CLIPVisionConfig(hidden_size=w["hidden"], intermediate_size=w["mlp"], projection_dim=w["proj"],
                               num_hidden_layers=w["layers"], num_attention_heads=w["heads"], num_channels=3,
                               image_size=w["image"], patch_size=w["patch"], hidden_act=w["act"],
                               layer_norm_eps=1e-5)
    tcfg = tf.CLIPTextConfig(vocab_size=w["vocab"], hidden_size=w["text_hidden"], intermediate_size=w["text_mlp"],
                             projection_dim=w["proj"], num_hidden_layers=w["text_layers"],
                             num_attention_heads=w["text_heads"], max_position_embeddings=w["seq"],
                             hidden_act=w["act"], layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=49406,
                             eos_token_id=49407)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision = tf.CLIPVisionModelWithProjection._from_config(vcfg, attn_implementation=attn)
            self.text = tf.CLIPTextModelWithProjection._from_config(tcfg, attn_implementation=attn)
            self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))

        def forward(self, pixel_values, input_ids):
            img = self.vision(pixel_values=pixel_values).image_embeds
            txt = self.text(input_ids=input_ids).text_embeds
            img = img / img.norm(dim=-1, keepdim=True)
            txt = txt / txt.norm(dim=-1, keepdim=True)
            logits = self.logit_scale.exp() * img @ txt.t()
            target = torch.arange(img.shape[0])
            ce = torch.nn.functional.cross_entropy
            return 0.5 * (ce(logits, target) + ce(logits.t(), target))

    mod = Model().float().train()
    opt = torch.optim.AdamW(mod.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.001)
    return mod, opt


def torch_inputs(w: dict, batch: int):
    import torch

    return tuple(torch.from_numpy(a) for a in make_inputs(w, batch).values())


# ---------------------------------------------------------------------------------------------------------
# Versions, memory
# ---------------------------------------------------------------------------------------------------------
def versions(impl: str) -> dict:
    out = {"python": sys.version.split()[0]}
    pkgs = ["torch", "transformers", "onnxruntime", "onnx", "onnxscript", "numpy"]
    for p in pkgs:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    hwm = proc_status("VmHWM")  # KiB
    if hwm is None:
        import resource

        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(hwm / 1024.0, 1)


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------
def time_loop(fn, warmup: int, seconds: float, min_iters: int = 3):
    for _ in range(warmup):
        fn()
    lat = []
    t0 = time.perf_counter()
    while True:
        a = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - a)
        el = time.perf_counter() - t0
        if el >= seconds and len(lat) >= min_iters:
            break
    return lat, el


# ---------------------------------------------------------------------------------------------------------
# ONNX export (runs in its own process: `peer.py --export ...`)
# ---------------------------------------------------------------------------------------------------------
def cache_key(workload: str, attn: str, fixed_batch: int | None) -> str:
    base = f"{workload}.{attn}"
    return base if fixed_batch is None else f"{base}.b{fixed_batch}"


def read_meta(key: str) -> dict | None:
    p = os.path.join(CACHE_DIR, key, "meta.json")
    try:
        with open(p) as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return None
    want = {p: versions("")[p] for p in ("torch", "transformers", "onnx", "onnxscript")}
    if meta.get("versions_export") != want:
        return None  # exported by other versions: redo
    return meta


def _validate(onnx_path: str, mod, w: dict, batches: list[int]) -> float:
    """Run the exported graph in ORT at the given batch sizes and compare with PyTorch; returns the worst
    relative max-abs error. Raises on mismatch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    feed_names = {i.name for i in sess.get_inputs()}
    worst = 0.0
    for b in batches:
        inp = make_inputs(w, b, seed=123 + b)
        with torch.inference_mode():
            ref = mod(*[torch.from_numpy(a) for a in inp.values()]).numpy()
        got = sess.run(None, {k: v for k, v in inp.items() if k in feed_names})[0]
        if got.shape != ref.shape:
            raise RuntimeError(f"ORT output shape {got.shape} != torch {ref.shape} at batch {b}")
        err = float(np.max(np.abs(got - ref)) / max(1e-6, float(np.max(np.abs(ref)))))
        worst = max(worst, err)
        if not np.isfinite(err) or err > 1e-3:
            raise RuntimeError(f"ORT output differs from torch at batch {b}: rel max-abs err {err:.3g}")
    return worst


def _export_one(mod, w: dict, path: str, exporter: str, fixed_batch: int | None):
    import torch

    names = input_names(w)
    ex_batch = fixed_batch if fixed_batch is not None else 2
    args = torch_inputs(w, ex_batch)
    if exporter == "dynamo":
        dyn = None
        if fixed_batch is None:
            bdim = torch.export.Dim("batch", min=1, max=4096)
            dyn = {n: {0: bdim} for n in names}
        prog = torch.onnx.export(mod, args, None, input_names=names, output_names=["embeds"],
                                 opset_version=OPSET, dynamo=True, dynamic_shapes=dyn, external_data=True,
                                 optimize=True)
        prog.save(path, external_data=True)
    elif exporter == "torchscript":
        dyn = None
        if fixed_batch is None:
            dyn = {n: {0: "batch"} for n in names}
            dyn["embeds"] = {0: "batch"}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(mod, args, path, input_names=names, output_names=["embeds"],
                              opset_version=OPSET, dynamo=False, dynamic_axes=dyn, do_constant_folding=True)
    else:
        raise ValueError(exporter)


def do_export(workload: str, attn: str, batch: int) -> dict:
    """Export `workload` to ONNX: first with a dynamic batch axis (dynamo exporter, then the TorchScript
    exporter), validated against PyTorch at batch 1 and 3; if both fail, with the batch fixed to `batch`.
    Writes bench/.cache/<key>/{model.onnx,meta.json}. Returns the meta of the model to use
    (or {"error": ...})."""
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    w = WORKLOADS[workload]
    os.makedirs(CACHE_DIR, exist_ok=True)
    vers = {p: versions("")[p] for p in ("torch", "transformers", "onnx", "onnxscript")}
    mod = build_torch_module(w, attn)
    errors = []
    plans = []
    dyn_meta = read_meta(cache_key(workload, attn, None))
    if dyn_meta is None:  # dynamic export not tried yet with these versions
        plans += [("dynamo", None), ("torchscript", None)]
    plans += [("dynamo", batch), ("torchscript", batch)]
    for exporter, fb in plans:
        key = cache_key(workload, attn, fb)
        final = os.path.join(CACHE_DIR, key)
        tmp = tempfile.mkdtemp(prefix=key + ".tmp.", dir=CACHE_DIR)
        path = os.path.join(tmp, "model.onnx")
        t0 = time.time()
        try:
            _export_one(mod, w, path, exporter, fb)
            t_export = time.time() - t0
            err = _validate(path, mod, w, [1, 3] if fb is None else [fb])
            meta = dict(ok=True, exporter=exporter, fixed_batch=fb, opset=OPSET, attn=attn,
                        export_s=round(t_export, 1), validate_rel_err=err, versions_export=vers,
                        errors_before=list(errors))
            with open(os.path.join(tmp, "meta.json"), "w") as fh:
                json.dump(meta, fh, indent=1)
            shutil.rmtree(final, ignore_errors=True)
            os.chmod(tmp, 0o755)
            os.replace(tmp, final)
            return meta
        except Exception as e:  # noqa: BLE001 - any exporter failure is recorded, the next plan is tried
            msg = f"{exporter}{'' if fb is None else f' (fixed batch {fb})'}: {type(e).__name__}: " \
                  f"{str(e).strip().splitlines()[0][:400] if str(e).strip() else ''}"
            errors.append(msg)
            print(f"[peer] export attempt failed: {msg}", file=sys.stderr)
            if os.environ.get("FGCLIP_PEER_DEBUG"):
                traceback.print_exc()
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            gc.collect()
        if fb is None and exporter == "torchscript":
            # both dynamic attempts failed: remember it so later runs go straight to a fixed batch
            os.makedirs(os.path.join(CACHE_DIR, cache_key(workload, attn, None)), exist_ok=True)
            with open(os.path.join(CACHE_DIR, cache_key(workload, attn, None), "meta.json"), "w") as fh:
                json.dump(dict(ok=False, errors=list(errors), versions_export=vers), fh, indent=1)
    return {"ok": False, "error": " | ".join(errors)}


def find_or_export(workload: str, attn: str, batch: int, log) -> dict:
    """Returns meta with 'path' of a usable model, exporting in a child process if needed."""
    for fb in (None, batch):
        key = cache_key(workload, attn, fb)
        meta = read_meta(key)
        if meta and meta.get("ok"):
            meta["path"] = os.path.join(CACHE_DIR, key, "model.onnx")
            return meta
        if fb is None and meta and not meta.get("ok"):
            continue  # dynamic export known to fail: look for / make a fixed-batch one
        if fb is None and meta is None:
            break  # nothing cached: export
    log(f"[peer] exporting {workload} to ONNX (once; cached under {CACHE_DIR})")
    cmd = [sys.executable, os.path.abspath(__file__), "--export", "--workload", workload, "--attn", attn,
           "--batch", str(batch)]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        return {"ok": False, "error": f"export process failed (rc {r.returncode})"}
    meta = json.loads(lines[-1])
    if meta.get("ok"):
        meta["path"] = os.path.join(CACHE_DIR, cache_key(workload, attn, meta["fixed_batch"]), "model.onnx")
    return meta


# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------
def base_record(a, w: dict) -> dict:
    return {"impl": a.impl, "workload": a.workload, "batch": a.batch, "threads": a.threads}


def finish_record(rec: dict, lat: list, el: float, batch: int, w: dict, impl: str) -> dict:
    rec.update({
        "items_per_s": round(batch * len(lat) / el, 4),
        "latency_ms_median": round(statistics.median(lat) * 1e3, 3),
        "latency_ms_min": round(min(lat) * 1e3, 3),
        "iterations": len(lat),
        "elapsed_s": round(el, 3),
        "peak_rss_mib": peak_rss_mib(),
        "os_threads": proc_status("Threads"),
        "flops_per_item": flops_per_item(w),
    })
    rec["gflop_per_s"] = round(rec["flops_per_item"] * rec["items_per_s"] / 1e9, 2)
    rec["versions"] = versions(impl)
    rec["cpu"] = cpu_model()
    rec["nproc"] = os.cpu_count()
    return rec


def run_torch(a, log) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    w = WORKLOADS[a.workload]
    rec = base_record(a, w)
    args = torch_inputs(w, a.batch)
    if w["kind"] == "clip-train":
        mod, opt = build_torch_train(w, a.attn)

        def fn():
            opt.zero_grad(set_to_none=True)
            loss = mod(*args)
            loss.backward()
            opt.step()
            return loss.detach().reshape(1)
    else:
        mod = build_torch_module(w, a.attn)

        def fn():
            with torch.inference_mode():
                return mod(*args)

    log(f"[peer] torch {a.workload} b={a.batch} t={a.threads}: built, timing")
    out = fn()
    rec["output_shape"] = list(out.shape)
    lat, el = time_loop(fn, a.warmup, a.seconds)
    rec["attn"] = a.attn
    rec["torch_num_threads"] = torch.get_num_threads()
    return finish_record(rec, lat, el, a.batch, w, "torch")


def run_ort(a, log) -> dict:
    w = WORKLOADS[a.workload]
    rec = base_record(a, w)
    if w["kind"] == "clip-train":
        rec["error"] = "training is measured against PyTorch only"
        return rec
    meta = find_or_export(a.workload, a.attn, a.batch, log)
    if not meta.get("ok"):
        rec["error"] = meta.get("error") or "export failed"
        rec["versions"] = versions("ort")
        return rec
    import numpy as np  # noqa: F401
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.time()
    sess = ort.InferenceSession(meta["path"], so, providers=["CPUExecutionProvider"])
    rec["session_init_s"] = round(time.time() - t0, 2)
    feed_names = {i.name for i in sess.get_inputs()}
    feed = {k: v for k, v in make_inputs(w, a.batch).items() if k in feed_names}
    log(f"[peer] ort {a.workload} b={a.batch} t={a.threads}: session ready ({meta['exporter']}), timing")

    def fn():
        return sess.run(None, feed)

    out = fn()
    rec["output_shape"] = list(out[0].shape)
    lat, el = time_loop(fn, a.warmup, a.seconds)
    rec["exporter"] = meta["exporter"]
    rec["onnx_fixed_batch"] = meta["fixed_batch"]
    rec["opset"] = meta["opset"]
    rec["attn"] = meta["attn"]
    if meta.get("errors_before"):
        rec["export_notes"] = meta["errors_before"]
    return finish_record(rec, lat, el, a.batch, w, "ort")


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------
def split_list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", required=False, default="fgclip-base-image",
                    help="workload name, comma list, or 'all': " + ", ".join(WORKLOADS))
    ap.add_argument("--impl", default="torch", help="torch, ort, or a comma list")
    ap.add_argument("--batch", default="1", help="batch size or comma list")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                    help="HF attention implementation (PyTorch, and the module exported to ONNX)")
    ap.add_argument("--json", action="store_true", help="JSON lines only on stdout; no progress on stderr")
    ap.add_argument("--export", action="store_true", help="(internal) export the workload to ONNX and exit")
    ap.add_argument("--list", action="store_true", help="list workloads with FLOPs/item and exit")
    a = ap.parse_args(argv)

    def log(msg: str):
        if not a.json:
            print(msg, file=sys.stderr, flush=True)

    if a.list:
        for n, w in WORKLOADS.items():
            print(json.dumps({"workload": n, "flops_per_item": flops_per_item(w), **w}))
        return 0

    workloads = list(WORKLOADS) if a.workload == "all" else split_list(a.workload)
    impls = split_list(a.impl)
    batches = [int(b) for b in split_list(a.batch)]
    for n in workloads:
        if n not in WORKLOADS:
            ap.error(f"unknown workload {n!r}; known: {', '.join(WORKLOADS)}")
    for i in impls:
        if i not in ("torch", "ort"):
            ap.error(f"unknown impl {i!r}")

    if a.export:
        meta = do_export(workloads[0], a.attn, batches[0])
        print(json.dumps(meta), flush=True)
        return 0

    combos = [(w, i, b) for w in workloads for i in impls for b in batches]
    if len(combos) > 1:
        # one child process per measurement, so peak RSS and thread pools are per measurement
        rc = 0
        for w, i, b in combos:
            cmd = [sys.executable, os.path.abspath(__file__), "--workload", w, "--impl", i, "--batch", str(b),
                   "--threads", str(a.threads), "--warmup", str(a.warmup), "--seconds", str(a.seconds),
                   "--attn", a.attn] + (["--json"] if a.json else [])
            r = subprocess.run(cmd)
            if r.returncode != 0:
                rc = r.returncode
                print(json.dumps({"impl": i, "workload": w, "batch": b, "threads": a.threads,
                                  "error": f"measurement process exited with {r.returncode}"}), flush=True)
        return rc

    a.workload, a.impl, a.batch = workloads[0], impls[0], batches[0]
    w = WORKLOADS[a.workload]
    try:
        rec = run_torch(a, log) if a.impl == "torch" else run_ort(a, log)
    except Exception as e:  # noqa: BLE001 - report, don't crash the driver
        if os.environ.get("FGCLIP_PEER_DEBUG"):
            traceback.print_exc()
        rec = base_record(a, w)
        rec["error"] = f"{type(e).__name__}: {str(e).strip()[:500]}"
        rec["versions"] = versions(a.impl)
    print(json.dumps(rec), flush=True)
    if not a.json and "items_per_s" in rec:
        log(f"[peer] {rec['impl']:5s} {rec['workload']:24s} b={rec['batch']:<3d} t={rec['threads']} "
            f"{rec['items_per_s']:.3f} items/s  median {rec['latency_ms_median']:.1f} ms/batch  "
            f"{rec['gflop_per_s']:.1f} GFLOP/s  peak RSS {rec['peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
