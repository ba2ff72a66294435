"""SeeCoder training (prompt_free.train): offline, tiny profile, CPU, a few steps each.

Images are tiny (32x32 buckets) so a step takes well under a second. Torch runs on one
thread here: on a shared 2-core machine two OpenMP threads can be 10x slower than one.
"""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free.errors import CheckpointError, ConfigError
from prompt_free.seecoder import load_seecoder, save_seecoder
from prompt_free.tiny import TINY_CONTEXT_DIM, tiny_seecoder, tiny_unet
from prompt_free.train import Trainer, config_from_dict, load_config, lr_at
from prompt_free.train.__main__ import main as train_main
from prompt_free.train.data import BatchPlan, assign_bucket, make_buckets, resize_to_bucket, scan_images

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_images(folder, n=4, size=(32, 32), seed=0):
    """Flat colour + a coloured block: distinct, compressible, deterministic."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = size
        a = np.zeros((h, w, 3), np.uint8)
        a[...] = rng.integers(0, 255, 3)
        a[h // 4 : 3 * h // 4, (i * w // 8) % w : (i * w // 8) % w + w // 3] = rng.integers(0, 255, 3)
        p = folder / f"img{i}.png"
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


def tiny_config(data_dir, out, **sections):
    cfg = {
        "base_model": "tiny",
        "output_dir": str(out),
        "data": {"paths": [str(data_dir)], "resolution": 32, "bucket_step": 32, "buckets": "square", "num_workers": 0},
        "training": {"batch_size": 2, "phases": [{"iterations": 4, "lr": 1e-3}], "uncond_dropout": 0.0, "seed": 0},
        "samples": {"interval": 0, "steps": 2},
        "checkpoint_interval": 1000,
        "progress": False,
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return config_from_dict(cfg)


def clone_sd(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------- one training run
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """12 steps on 4 images (batch 4, lr 1e-3) with `fixed_noise`: every step sees the same
    noise / timesteps / dropout, so the loss is the loss of one fixed batch, measured before
    each update."""
    root = tmp_path_factory.mktemp("trained")
    make_images(root / "data")
    refs = make_images(root / "refs", n=1, seed=9)
    cfg = tiny_config(
        root / "data", root / "out",
        training={"batch_size": 4, "fixed_noise": True,
                  "phases": [{"iterations": 8, "lr": 1e-3}, {"iterations": 4, "lr": 5e-4}]},
        samples={"interval": 6, "references": [str(refs[0])], "steps": 2},
        checkpoint_interval=6,
    )
    tr = Trainer(cfg)
    before = {"seecoder": clone_sd(tr.seecoder), "unet": clone_sd(tr.unet), "vae": clone_sd(tr.vae)}
    modes = []
    hooks = [
        m.register_forward_hook(lambda mod, a, o, name=name: modes.append((name, mod.training)))
        for name, m in (("imencoder", tr.seecoder.imencoder), ("unet", tr.unet), ("vae", tr.vae.encoder),
                        ("imdecoder", tr.seecoder.imdecoder))
    ]
    result = tr.train()
    for h in hooks:
        h.remove()
    return dict(trainer=tr, result=result, before=before, modes=modes, out=root / "out", refs=refs)


def test_loss_decreases(trained):
    losses = trained["result"].losses
    assert len(losses) == 12
    assert losses[-1] < 0.97 * losses[0], losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_only_decoder_and_query_transformer_change(trained):
    tr, before = trained["trainer"], trained["before"]
    for part in ("unet", "vae"):
        after = getattr(tr, part).state_dict()
        assert all(torch.equal(before[part][k], after[k]) for k in after), part
    after = tr.seecoder.state_dict()
    changed = {k for k in after if not torch.equal(before["seecoder"][k], after[k])}
    assert changed, "nothing was trained"
    assert all(k.startswith(("imdecoder.", "qtransformer.")) for k in changed), sorted(changed)[:5]
    assert any(k.startswith("imdecoder.") for k in changed) and any(k.startswith("qtransformer.") for k in changed)
    # frozen: no gradients, not in the optimizer, eval mode whenever they ran
    trainable = {id(p) for p in tr.seecoder.trainable_parameters()}
    in_opt = {id(p) for g in tr.optimizer.param_groups for p in g["params"]}
    assert in_opt == trainable
    assert all(id(p) in trainable for p in tr.optimizer.state)
    for m in (tr.unet, tr.vae, tr.seecoder.imencoder):
        assert not any(p.requires_grad for p in m.parameters())
        assert all(p.grad is None for p in m.parameters())
    modes = trained["modes"]
    assert {n for n, _ in modes} >= {"imencoder", "unet", "vae", "imdecoder"}
    assert not any(training for name, training in modes if name in ("imencoder", "unet", "vae"))
    assert any(training for name, training in modes if name == "imdecoder")  # decoder dropout active


def test_checkpoints_samples_and_log(trained):
    out, tr = trained["out"], trained["trainer"]
    assert (out / "seecoder-step6.safetensors").is_file()
    final = out / "seecoder-final.safetensors"
    assert trained["result"].seecoder_path == final and final.is_file()
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step0000006-00-img0.png", "step0000012-00-img0.png"]
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 13))
    assert log[0]["lr"] == 1e-3 and log[-1]["lr"] == 5e-4
    # the final file is the trained SeeCoder in the official layout, loadable as is
    from safetensors.torch import load_file

    assert all(k.startswith("ctx.image.") for k in load_file(str(final)))
    model = load_seecoder(final)
    trained_sd = tr.seecoder.state_dict()
    assert all(torch.equal(v, trained_sd[k].cpu()) for k, v in model.state_dict().items())
    img = torch.from_numpy(np.asarray(Image.open(trained["refs"][0]).resize((64, 64)))).permute(2, 0, 1)[None] / 255.0
    emb = model.encode(img)
    assert emb.shape == (1, 148, TINY_CONTEXT_DIM) and torch.isfinite(emb).all()
    from prompt_free.sampling import denoise, make_scheduler

    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    latents = denoise(tiny_unet(), make_scheduler("DDIM"), noise, emb, torch.zeros_like(emb), steps=3, guidance=2.0)
    assert latents.shape == (1, 4, 8, 8) and torch.isfinite(latents).all()


def test_trained_checkpoint_loads_in_the_engine_and_generates(trained, tmp_path):
    """The final file, registered as a `path:` entry in checkpoints.yaml, drives the app's engine."""
    from prompt_free.engine import Engine
    from prompt_free.registry import Registry
    from prompt_free.tasks import VariationSettings, image_variation

    final = trained["out"] / "seecoder-final.safetensors"
    yaml_path = tmp_path / "checkpoints.yaml"
    yaml_path.write_text(
        "profiles:\n  mine:\n    seecoders:\n"
        f"      My SeeCoder: {{path: '{final}', unconditional: zeros}}\n"
        "    base_models:\n      Tiny SD: {tiny: sd, seed: 1}\n"
    )
    engine = Engine(Registry.load(yaml_path, "mine"), device="cpu")
    result = image_variation(engine, trained["refs"][0], VariationSettings(width=64, height=64, steps=2, seed=3))
    assert result.images[0].size == (64, 64)
    trained_sd = trained["trainer"].seecoder.state_dict()
    loaded = engine.seecoder("My SeeCoder").model.state_dict()
    assert all(torch.equal(v, trained_sd[k].cpu()) for k, v in loaded.items())


# ----------------------------------------------------------------------------- resume
def test_resume_matches_uninterrupted_run(tmp_path):
    make_images(tmp_path / "data", n=3)
    sections = dict(
        training={
            "batch_size": 2, "gradient_accumulation": 2, "uncond_dropout": 0.5,
            "phases": [{"iterations": 2, "lr": 1e-3}, {"iterations": 2, "lr": 3e-4}],
        },
        resume="latest",
    )
    straight = Trainer(tiny_config(tmp_path / "data", tmp_path / "a", **sections))
    res_a = straight.train()
    assert res_a.step == 4

    # first half through the command line, stopped after step 3 (mid phase 2), then resumed
    cfg_b = tiny_config(tmp_path / "data", tmp_path / "b", **sections)
    (tmp_path / "b.yaml").write_text(json.dumps(cfg_b.to_dict()))
    assert train_main(["--config", str(tmp_path / "b.yaml"), "--max-steps", "3"]) == 0
    assert (tmp_path / "b" / "seecoder-step3.safetensors").is_file()
    assert not (tmp_path / "b" / "seecoder-final.safetensors").exists()
    resumed = Trainer(cfg_b)
    res_b = resumed.train()
    assert res_b.step == 4 and len(res_b.losses) == 1

    log_a = [json.loads(ln)["loss"] for ln in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(ln)["loss"] for ln in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert log_a == log_b
    sd_a, sd_b = straight.seecoder.state_dict(), resumed.seecoder.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # and the optimizer moments too
    st_a, st_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(st_a[i]["exp_avg"], st_b[i]["exp_avg"]) for i in st_a)


# ----------------------------------------------------------------------------- SeeCoder-PA
def test_pa_finetune_starts_from_plain_checkpoint(tmp_path):
    make_images(tmp_path / "data", n=2)
    plain = tiny_seecoder(seed=7)
    save_seecoder(plain, tmp_path / "plain.safetensors")
    cfg = tiny_config(
        tmp_path / "data", tmp_path / "out",
        seecoder={"variant": "pa", "init": str(tmp_path / "plain.safetensors")},
        training={"batch_size": 1, "phases": [{"iterations": 3, "lr": 5e-5}]},
    )
    tr = Trainer(cfg)
    pa = tr.seecoder
    assert pa.config.position_aware
    pe_names = [n for n, _ in pa.qtransformer.pe_layer.named_parameters()]
    assert {f"qtransformer.pe_layer.{n}" for n in pe_names} <= {
        n for n, p in pa.named_parameters() if p.requires_grad
    }
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    pa.eval()
    with torch.no_grad():
        assert torch.equal(pa(x), plain(x))  # zero last layer: PA starts as the plain model
    pe_before = clone_sd(pa.qtransformer.pe_layer)
    tr.train()
    pe_after = pa.qtransformer.pe_layer.state_dict()
    assert all(not torch.equal(pe_before[k], pe_after[k]) for k in pe_after), "every pe_layer tensor trains"
    saved = load_seecoder(tmp_path / "out" / "seecoder-final.safetensors")
    assert saved.config.position_aware


# ----------------------------------------------------------------------------- uncond dropout
def test_uncond_dropout_one_feeds_zeros_to_the_unet(tmp_path):
    make_images(tmp_path / "data", n=2)
    cfg = tiny_config(tmp_path / "data", tmp_path / "out", training={"uncond_dropout": 1.0, "phases": [{"iterations": 2, "lr": 1e-3}]})
    tr = Trainer(cfg)
    contexts, encoded = [], []
    h1 = tr.unet.register_forward_pre_hook(
        lambda m, args, kwargs: contexts.append(kwargs["encoder_hidden_states"].detach().clone()), with_kwargs=True
    )
    h2 = tr.vae.encoder.register_forward_hook(lambda m, args, out: encoded.append(args[0].shape[0]))
    before = clone_sd(tr.seecoder)
    tr.train()
    h1.remove(), h2.remove()
    assert len(contexts) == 2
    for c in contexts:
        assert c.shape == (2, 148, TINY_CONTEXT_DIM) and torch.count_nonzero(c) == 0
    assert sum(encoded) == 4  # no cache: the VAE encodes each micro-batch
    after = tr.seecoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after)  # zero gradient, no weight decay


# ----------------------------------------------------------------------------- latent cache
def test_latent_cache_is_reused(tmp_path):
    paths = make_images(tmp_path / "data", n=4)
    cache = tmp_path / "cache"

    def run(out, steps):
        cfg = tiny_config(
            tmp_path / "data", tmp_path / out,
            data={"cache_latents": True, "cache_dir": str(cache)},
            training={"phases": [{"iterations": max(steps, 1), "lr": 1e-3}]},
        )
        tr = Trainer(cfg)
        encoded = []
        h = tr.vae.encoder.register_forward_hook(lambda m, args, out: encoded.append(args[0].shape[0]))
        if steps:
            tr.train()
        else:
            tr.precompute_latents()  # what train() does first
        h.remove()
        return tr, sum(encoded)

    tr, n = run("a", 3)  # 3 steps x 2 images: into the second epoch
    assert n == 4  # each image once, in the precompute pass; training read the cache
    assert len(list(cache.rglob("*.safetensors"))) == 4
    # cached moments are the VAE's posterior of the bucket-sized image
    rec = tr.records[0]
    bucket = tr.buckets[tr.bucket_of[0]]
    expected = tr.encode_moments(tr.dataset.load_pixels(0)[None])[0]
    torch.testing.assert_close(tr.cache.load(rec, bucket), expected, rtol=1e-5, atol=1e-5)

    _, n = run("b", 2)  # a second run: nothing encoded
    assert n == 0
    os.utime(paths[1], ns=(1, 10**18))  # a changed file is encoded again
    _, n = run("c", 0)
    assert n == 1


# ----------------------------------------------------------------------------- data
def test_folders_tar_shards_and_buckets(tmp_path):
    make_images(tmp_path / "data" / "sub", n=2, size=(96, 48))
    shard = tmp_path / "data" / "shard-000.tar"
    with tarfile.open(shard, "w") as tf:
        for i, (fmt, size) in enumerate([("PNG", (40, 80)), ("JPEG", (64, 64))]):
            buf = io.BytesIO()
            Image.new("RGB", size, (10 * i, 20, 30)).save(buf, fmt)
            data = buf.getvalue()
            for name, payload in ((f"{i:04d}.{'png' if fmt == 'PNG' else 'jpg'}", data), (f"{i:04d}.json", b"{}")):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    records, warnings = scan_images([str(tmp_path / "data")])
    assert not warnings
    assert [r.key.split(os.sep)[-1] for r in records] == ["shard-000.tar::0000.png", "shard-000.tar::0001.jpg", "img0.png", "img1.png"]
    assert records[0].open().size == (40, 80) and records[1].open().size == (64, 64)

    assert make_buckets(512) == [(384, 640), (448, 576), (512, 512), (576, 448), (640, 384)]
    buckets = make_buckets(96, "auto", step=32)
    assert buckets == [(64, 128), (96, 96), (128, 64)]
    wide = buckets[assign_bucket(96, 48, buckets)]
    assert wide[0] > wide[1]
    assert resize_to_bucket(records[2].open(), wide).size == wide
    tall = buckets[assign_bucket(40, 80, buckets)]
    assert tall[1] > tall[0]

    plan = BatchPlan([0, 0, 0, 1, 1], batch_size=2, seed=3)
    ep0 = [plan.batch(k) for k in range(plan.per_epoch)]
    assert plan.per_epoch == 3
    assert {i for _, idx in ep0 for i in idx} == set(range(5))
    assert all(len(idx) == 2 and set(idx) <= set(plan.groups[b]) for b, idx in ep0)  # one bucket per batch
    assert ep0 == [BatchPlan([0, 0, 0, 1, 1], 2, 3).batch(k) for k in range(3)]  # deterministic
    big = BatchPlan([0] * 20, batch_size=2, seed=0)
    assert [big.batch(k) for k in range(10)] != [big.batch(k) for k in range(10, 20)]  # reshuffled each epoch


def test_lr_phases():
    from prompt_free.train.config import Phase

    phases = [Phase(3, 1e-4), Phase(2, 1e-5)]
    assert [lr_at(s, phases) for s in range(6)] == [1e-4] * 3 + [1e-5] * 3
    assert lr_at(0, phases, warmup_steps=2) == 0.5e-4


# ----------------------------------------------------------------------------- config files
def test_config_files_and_errors(tmp_path, capsys):
    full = load_config("configs/train_seecoder.yaml")
    assert full.training.total_steps == 100_000
    assert [(p.iterations, p.lr) for p in full.training.phases] == [(50000, 1e-4), (50000, 1e-5)]
    assert full.training.batch_size * full.training.gradient_accumulation * 8 == 512
    tiny = load_config("configs/train_tiny.yaml", ["seecoder.variant=pa", "training.batch_size=3"])
    assert tiny.base_model == "tiny" and tiny.seecoder.variant == "pa" and tiny.training.batch_size == 3
    with pytest.raises(ConfigError, match="unknown field.*batchsize"):
        load_config("configs/train_tiny.yaml", ["training.batchsize=3"])
    with pytest.raises(ConfigError, match="buckets"):
        load_config("configs/train_tiny.yaml", ["data.buckets=[[100, 64]]"])
    with pytest.raises(ConfigError, match="variant"):
        load_config("configs/train_tiny.yaml", ["seecoder.variant=anime"])
    with pytest.raises(ConfigError, match="lr"):
        load_config("configs/train_tiny.yaml", ["training.phases=[{iterations: 5}]"])
    assert train_main(["--config", "configs/train_tiny.yaml", "--print-config", "--set", "training.seed=5"]) == 0
    assert "seed: 5" in capsys.readouterr().out
    assert train_main(["--config", str(tmp_path / "missing.yaml")]) == 2


# ----------------------------------------------------------------------------- backbone init
def test_backbone_from_timm_swin_state_dict(tmp_path):
    """A timm Swin state dict (the layout of public Swin-L weights) initialises the frozen
    backbone; res5 then equals timm's final features (bit-exact sizes: multiples of 192)."""
    from safetensors.torch import save_file
    from timm.models.swin_transformer import SwinTransformer

    from prompt_free.train import load_backbone_weights

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        timm_swin = SwinTransformer(
            img_size=192, embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=12,
            num_classes=0, strict_img_size=False, always_partition=True,
        ).eval()
        for p in timm_swin.parameters():  # make the norms non-trivial
            p.data.add_(0.02 * torch.randn_like(p))
    save_file({k: v.contiguous() for k, v in timm_swin.state_dict().items()}, str(tmp_path / "swin.safetensors"))
    model = tiny_seecoder(seed=3)
    decoder_before = clone_sd(model.imdecoder)
    load_backbone_weights(model, tmp_path / "swin.safetensors")
    assert all(torch.equal(v, model.imdecoder.state_dict()[k]) for k, v in decoder_before.items())
    x = torch.rand(1, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.imencoder(x)["res5"]
        ref = timm_swin.forward_features(x).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="backbone"):
        load_backbone_weights(model, tmp_path / "bad.safetensors")


def test_base_model_from_a_diffusers_folder(tmp_path):
    from prompt_free.tiny import tiny_vae
    from prompt_free.train import resolve_base_model

    tiny_unet().save_pretrained(tmp_path / "model" / "unet")
    tiny_vae().save_pretrained(tmp_path / "model" / "vae")
    base = resolve_base_model(str(tmp_path / "model"))
    assert base.unet.config.cross_attention_dim == TINY_CONTEXT_DIM
    ref = tiny_unet().state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in base.unet.state_dict().items())
    with pytest.raises(ConfigError, match="diffusers"):
        resolve_base_model(str(tmp_path / "nothing-here"))
    make_images(tmp_path / "data", n=1)
    cfg = tiny_config(tmp_path / "data", tmp_path / "out", base_model=str(tmp_path / "model"), seecoder={"size": "tiny"})
    tr = Trainer(cfg)
    assert tr.seecoder.config.out_dim == TINY_CONTEXT_DIM
