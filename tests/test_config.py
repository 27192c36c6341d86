"""Pipeline configs: strict typing, errors naming the YAML path, extends and --set."""

from __future__ import annotations


import pytest

from conftest import BAD, ROOT
from ecgvgg.core.config import load_config
from ecgvgg.core.errors import ConfigError


def test_seed_pipeline_resolves_its_pieces():
    cfg = load_config(ROOT / "pipelines" / "adasyn_vgg.yaml")
    assert cfg.resampling.sampler == "adasyn"
    assert cfg.training.batch_size == 256 and cfg.training.learning_rate == 0.001
    assert cfg.training.early_stopping_patience > 0
    assert cfg.input.kind == "1d" and cfg.model.width == 0.25
    assert cfg.data.resolved_path().is_file()
    flat = cfg.flat()
    for key in (
        "data.path",
        "data.label_column",
        "data.group_column",
        "training.epochs",
        "training.batch_size",
        "training.learning_rate",
        "model.width",
        "resampling.sampler",
        "tracking.uri",
    ):
        assert key in flat


def test_set_overrides_are_typed():
    cfg = load_config(
        ROOT / "pipelines" / "adasyn_vgg.yaml",
        ["training.epochs=2", "model.width=0.5", "resampling.sampler=none", "tracking.uri=sqlite:///x.db"],
    )
    assert cfg.training.epochs == 2 and cfg.model.width == 0.5
    assert cfg.resampling.sampler == "none" and cfg.tracking.resolved_uri() == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unknown_key.yaml", r"training\.epochz: unknown key \(allowed: epochs, batch_size"),
        ("wrong_type.yaml", r"training\.learning_rate: .*\(got 'fast'\)"),
        ("negative_batch.yaml", r"training\.batch_size: Input should be greater than 0 \(got -3\)"),
        ("missing_path.yaml", r"data\.path: required"),
        (
            "bad_sampler.yaml",
            r"resampling\.sampler: Input should be 'adasyn', 'smote', 'random', 'balanced' or 'none' \(got 'adasin'\)",
        ),
    ],
)
def test_bad_configs_name_the_key(name, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(BAD / name)


def test_bad_set_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(ROOT / "pipelines" / "adasyn_vgg.yaml", ["training.epochs"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "loop.yaml").write_text("extends: [loop.yaml]\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "loop.yaml")


def test_sampler_params_are_checked_against_the_sampler():
    with pytest.raises(ConfigError, match=r"resampling: sampler 'random'.*n_neighbors"):
        load_config(ROOT / "pipelines" / "adasyn_vgg.yaml", ["resampling.sampler=random", "resampling.params={n_neighbors: 3}"])


def test_a_copied_pipeline_finds_the_shipped_pieces_and_a_missing_piece_says_where_it_looked(tmp_path):
    copy = tmp_path / "mine.yaml"
    copy.write_text((ROOT / "pipelines" / "adasyn_vgg.yaml").read_text())
    assert load_config(copy).model.width == load_config(ROOT / "pipelines" / "adasyn_vgg.yaml").model.width
    (tmp_path / "broken.yaml").write_text("extends: [pieces/nope.yaml]\ndata: {path: x.csv}\n")
    with pytest.raises(
        ConfigError,
        match=r"extends: pieces/nope.yaml: no such file \(extends paths are relative "
        r"to the YAML file's folder",
    ):
        load_config(tmp_path / "broken.yaml")


def test_a_bad_set_key_names_the_set_not_the_file():
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "pipelines" / "adasyn_vgg.yaml", ["training.epoch=3"])
    text = str(err.value)
    assert text.startswith("--set training.epoch=3: training.epoch: unknown key") and "adasyn_vgg.yaml" not in text
    with pytest.raises(ConfigError, match=r"^--set training.epochs=0: training.epochs"):
        load_config(ROOT / "pipelines" / "adasyn_vgg.yaml", ["training.epochs=0"])


def test_the_configuration_reference_covers_every_key_with_its_meaning():
    from pydantic import BaseModel

    from ecgvgg.core.config import PipelineConfig
    from ecgvgg.core.config_reference import reference_markdown

    text = reference_markdown()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    for section, info in PipelineConfig.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            for key in info.annotation.model_fields:
                row = rows[f"{section}.{key}"]
                assert row.rstrip().rstrip("|").split("|")[-1].strip(), f"{section}.{key} has no meaning"
    assert '| `training.class_weight` | `"auto"` \\| `"balanced"` \\| `"records"`' in text
    assert rows["data.path"].split("|")[3].strip() == "required"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (["data.group_column=null", "training.class_weight=balanced"], "data.group_column"),
        (["data.stream=true", "resampling.sampler=balanced", "split.folds=null", "resampling.max_per_class=null"], "data.stream"),
        (["training.mixup=0.2"], "training.mixup"),
    ],
)
def test_a_record_head_needs_records_in_memory_and_no_mixup(extra, key):
    from ecgvgg.core.config import load_config

    with pytest.raises(ValueError, match=rf"training.subject_adversary: .*{key}"):
        load_config(ROOT / "pipelines" / "interpatient_cv.yaml", ["training.subject_adversary=0.1", *extra])


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["data.group_column=null", "training.class_weight=balanced"], "record_consensus: needs data.group_column"),
        (
            ["data.stream=true", "resampling.sampler=balanced", "split.folds=null", "resampling.max_per_class=null"],
            "record_consensus: not available with data.stream",
        ),
        (["record_consensus=1"], "record_consensus"),
        (["record_clusters=1"], "record_clusters"),
    ],
)
def test_record_consensus_needs_the_records_in_memory(extra, says):
    from ecgvgg.core.config import load_config

    with pytest.raises(ValueError, match=says):
        load_config(ROOT / "pipelines" / "interpatient_cv.yaml", ["record_consensus=0.5", "training.subject_adversary=0", *extra])


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["data.group_column=null", "training.class_weight=balanced"], "record_adaptation: needs data.group_column"),
        (["split.folds=5"], "record_adaptation: not available with split.folds"),
        (["model.batch_norm=false"], "record_adaptation: not available with model.batch_norm: false"),
        (["record_adaptation=1.5"], "record_adaptation"),
    ],
)
def test_record_adaptation_needs_the_records_and_batch_normalisation(extra, says):
    from ecgvgg.core.config import load_config

    base = ["record_adaptation=0.5", "training.subject_adversary=0", "split.folds=null"]
    with pytest.raises(ValueError, match=says):
        load_config(ROOT / "pipelines" / "interpatient_cv.yaml", [*base, *extra])


#: The shipped pipelines (tune_space.yaml is a search space for ``ecgvgg tune``, not a pipeline).
PIPELINES = sorted(p for p in (ROOT / "pipelines").glob("*.yaml") if p.name != "tune_space.yaml")


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_every_shipped_pipeline_is_a_valid_configuration(pipeline):
    from ecgvgg.core.config import load_config

    cfg = load_config(pipeline)
    assert cfg.data.path and cfg.training.epochs >= 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["baseline=none"], r"baseline_blend: needs a baseline to blend \(baseline is none\)"),
        (["split.folds=5"], "baseline_blend: not available with split.folds"),
        (
            ["data.stream=true", "resampling.sampler=balanced", "split.folds=null", "resampling.max_per_class=null"],
            "baseline_blend: not available with data.stream",
        ),
        (["baseline_blend=1"], "baseline_blend"),
    ],
)
def test_a_blend_needs_one_saved_baseline(extra, says):
    from ecgvgg.core.config import load_config

    with pytest.raises(ValueError, match=says):
        load_config(ROOT / "pipelines" / "interpatient_cv.yaml", ["baseline_blend=0.5", "training.subject_adversary=0", *extra])


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("data.channels=[x,x]", "data.channels: channels must be unique"),
        ("data.class_names=[N,N,V,F,Q]", "data.class_names: class names must be unique"),
        ("data.rhythm_columns=[a,a]", "data.rhythm_columns: rhythm columns must be unique"),
    ],
)
def test_a_list_that_names_something_twice_is_refused_by_its_key(item, says):
    with pytest.raises(ValueError, match=says):
        load_config(ROOT / "pipelines" / "interpatient_cv.yaml", [item])
