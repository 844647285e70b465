"""Every config composes, and the keys the project relies on are there."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, compose_run
from fishtune.config import comparable_config, config_digest, run_dir, saved_comparable_config, validate
from fishtune.errors import ConfigError

CONFIGS = REPO / "configs"
GROUPS = ("model", "task", "method", "mask", "train", "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_config_composes_and_validates(group: str, option: str) -> None:
    cfg = compose_run(f"{group}={option}")
    validate(cfg)
    assert str(run_dir(cfg)).startswith("results/runs/")


@pytest.mark.parametrize("variant", _options("variant"))
def test_every_variant_composes(variant: str) -> None:
    cfg = compose_run(f"+variant={variant}")
    validate(cfg)
    assert cfg.method.alpha == 2 * cfg.method.r  # the same LoRA scale in every cell


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_yaml_starts_with_the_command_that_uses_it(path: Path) -> None:
    text = path.read_text().removeprefix("# @package _global_\n")  # Hydra's header comes first
    assert text.startswith("# fishtune "), f"{path} must start with a `# fishtune ...` comment"


def test_required_keys() -> None:
    cfg = compose_run()
    for key in ("epochs", "batch_size", "lr", "weight_decay", "warmup_ratio", "max_seq_length", "max_steps",
                "max_train_samples", "max_eval_samples", "device", "precision"):
        assert key in cfg.train, key
    assert cfg.seed == 1 and cfg.model.name == "minilm-l6" and cfg.method.name == "lora" and cfg.mask.name == "none"
    assert cfg.train.lr == cfg.method.lr


def test_mask_variants_inherit_fish_defaults() -> None:
    for strategy in ("fish", "random", "reverse"):
        cfg = compose_run(f"mask={strategy}")
        assert cfg.mask.strategy == strategy and cfg.mask.num_samples == 1024 and cfg.mask.keep_ratio == 0.5


def test_run_dir_is_readable_and_unique_per_config() -> None:
    a, b = compose_run("task=rte", "seed=2"), compose_run("task=rte", "seed=2", "train.lr=1e-3")
    assert str(run_dir(a)).startswith("results/runs/rte/minilm-l6/lora-r8/none/seed2-")
    assert run_dir(a) != run_dir(b)
    assert run_dir(a) == run_dir(compose_run("task=rte", "seed=2", "train.resume=false"))  # execution-only key
    assert config_digest(a) == config_digest(compose_run("seed=2", "task=rte"))


@pytest.mark.parametrize("override,message", [
    ("mask.keep_ratio=0", "mask.keep_ratio"), ("mask.keep_ratio=1.5", "mask.keep_ratio"),
    ("mask.num_samples=0", "mask.num_samples"), ("method.r=0", "method.r"), ("train.lr=0", "train.lr"),
    ("train.batch_size=0", "train.batch_size"), ("mask.labels=guess", "mask.labels"),
    ("mask.fisher_at=later", "mask.fisher_at"), ("mask.warmup_order=sorted", "mask.warmup_order"),
    ("train.device=tpu", "train.device"),
])
def test_out_of_range_values_are_rejected(override: str, message: str) -> None:
    mask = "mask=fish" if override.startswith("mask.") else "mask=none"
    with pytest.raises(ConfigError, match=message):
        validate(compose_run(mask, override))


def test_a_train_cap_that_keeps_the_whole_split_is_the_uncapped_run() -> None:
    """MRPC has 3,668 train examples: a cap of 10,000 (or exactly 3,668) trains on all of them, so it is
    the run `null` names; a cap below the split is a different run."""
    whole = config_digest(compose_run("task=mrpc"))
    for cap in (3668, 10000):
        assert config_digest(compose_run("task=mrpc", f"train.max_train_samples={cap}")) == whole
    assert config_digest(compose_run("task=mrpc", "train.max_train_samples=3667")) != whole
    assert config_digest(compose_run("task=sst2", "train.max_train_samples=10000")) != config_digest(compose_run("task=sst2"))


def test_a_split_bigger_than_published_under_a_whole_split_cap_is_refused() -> None:
    from fishtune.config import check_train_size

    cfg = compose_run("task=mrpc", "train.max_train_samples=5000")
    check_train_size(cfg, 3668)
    with pytest.raises(ConfigError, match="treats it as the whole split.*6,000 examples"):
        check_train_size(cfg, 6000)
    check_train_size(compose_run("task=mrpc"), 6000)  # no cap: a bigger custom split is fine


@pytest.mark.parametrize("overrides, tag", [
    (["mask=fish"], "fish-k0.5-warmup"),                                 # defaults: the tag of every earlier run
    (["mask=fish", "mask.fisher_at=init"], "fish-k0.5-init"),
    (["mask=fish_live"], "fish-live-k0.5-warmup"),
    (["mask=reverse", "mask.scope=per_tensor"], "reverse-k0.5-warmup-per_tensor"),
    (["mask=fish", "mask.warmup_steps=10", "mask.num_samples=256", "mask.labels=expected"],
     "fish-k0.5-warmup-w10-n256-expected"),
    (["mask=fish", "mask.warmup_order=length_grouped", "mask.head_in_budget=true"],
     "fish-k0.5-warmup-length_grouped-head"),
    (["mask=random", "mask.keep=147"], "random-n147"),
    (["mask=random", "mask.num_samples=256"], "random-k0.5"),            # no Fisher: nothing to show
    (["method=lora", "method.r=16", "mask=fish", "mask.keep_match=lora"], "fish-match.lora-r8-warmup"),
])
def test_the_mask_tag_names_every_knob_that_changes_the_selection(overrides: list[str], tag: str) -> None:
    """Ablation cells get their own folder names and table labels (`...-per_tensor`), so a row's label
    never changes when a cell differing in one knob lands beside it; default cells keep their tags."""
    assert compose_run(*overrides).mask.tag == tag


@pytest.mark.parametrize("overrides", [
    ("task=sst2", "train.max_train_samples=10000"),            # a cap that draws a subset
    ("task=mrpc", "train.max_train_samples=10000"),            # one that keeps the whole split: no cap
    ("+pair=lora", "mask=none", "task=cola", "seed=3"),        # vanilla: the pair's mask keys drop out
    ("+pair=lora", "mask=fish", "task=stsb", "seed=2"),        # mask.seed follows the seed
    ("mask=random", "mask.seed=7", "seed=2"),                  # an explicit mask.seed stays
])
def test_a_saved_config_yaml_gives_the_comparable_config_the_record_would_carry(overrides: tuple[str, ...]) -> None:
    """The reporter rebuilds old records' comparable configs from config.yaml: the same dict."""
    import yaml
    from omegaconf import OmegaConf

    cfg = compose_run(*overrides)
    runtime = {"device": "cpu", "precision": "fp32"}
    saved = yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True))  # what the runner writes
    assert saved_comparable_config(saved, runtime) == comparable_config(cfg, runtime=runtime)
