"""Hand-written results records and files for the search tests: the shape `--modelopt-json`
writes (what `results.load_run` validates and `search.choose` reads), with chosen figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REFERENCE_BYTES = 1_000_000
REFERENCE_P50_MS = 20.0
REFERENCE_ACCURACY = 0.95


def record(
    technique: str,
    speedup: float,
    interval: tuple[float | None, float | None],
    *,
    size_ratio: float = 1.0,
    accuracy: float | None = REFERENCE_ACCURACY,
    agreement: float = 1.0,
    spec: str = "digits_cnn",
    noisy: str | None = None,
    batch: int = 1,
) -> dict[str, Any]:
    """One variant's record; latency follows from the speedup against a 20 ms reference."""
    p50_ms = REFERENCE_P50_MS / speedup
    low, high = interval
    p50_interval = [
        REFERENCE_P50_MS / high if high else None,
        REFERENCE_P50_MS / low if low else None,
    ]
    variant_bytes = int(REFERENCE_BYTES * size_ratio)
    figures: dict[str, Any] = {"max_abs_error": 0.0 if speedup == 1 else 0.01}
    figures["top1_agreement"] = agreement
    if accuracy is not None:
        figures.update(
            accuracy=accuracy,
            reference_accuracy=REFERENCE_ACCURACY,
            accuracy_drop=REFERENCE_ACCURACY - accuracy,
            relative_accuracy_drop=(REFERENCE_ACCURACY - accuracy) / REFERENCE_ACCURACY,
        )
    metrics = {
        "speedup": {"value": speedup, "interval": [low, high], "undecidable": noisy},
        "latency_p50_ms": {"value": p50_ms, "interval": p50_interval, "undecidable": noisy},
        "throughput": {
            "value": batch / (p50_ms / 1e3),
            "interval": [
                batch / (p50_interval[1] / 1e3) if p50_interval[1] else 0.0,
                batch / (p50_interval[0] / 1e3) if p50_interval[0] else None,
            ],
            "undecidable": noisy,
        },
        "size_bytes": {"value": variant_bytes, "interval": None, "undecidable": None},
        "size_ratio": {"value": size_ratio, "interval": None, "undecidable": None},
        "gzip_size_ratio": {"value": size_ratio, "interval": None, "undecidable": None},
        "peak_memory_mb": {"value": 1.0, "interval": None, "undecidable": None},
    }
    metrics.update(
        {name: {"value": v, "interval": None, "undecidable": None} for name, v in figures.items()}
    )
    stats = {"n": 40, "p50": p50_ms / 1e3}
    return {
        "test": f"test_{spec}.py::test_{spec}[{technique}]",
        "spec": spec,
        "technique": technique,
        "meter": "wall",
        "latency": {
            "meter": "wall",
            "speedup": speedup,
            "speedup_interval": [low, high],
            "rounds": 40,
            "confidence": 0.999,
            "variant": {"stats": stats},
            "reference": {"stats": {"n": 40, "p50": REFERENCE_P50_MS / 1e3}},
        },
        "metrics": metrics,
        "sizes": {
            "variant_bytes": variant_bytes,
            "reference_bytes": REFERENCE_BYTES,
            "variant_gzip_bytes": variant_bytes,
            "reference_gzip_bytes": REFERENCE_BYTES,
        },
        "accuracy": figures,
        "variant": {"notes": []},
        "checks": [],
        "verdict": None,
    }


def digits_records() -> list[dict[str, Any]]:
    """A digits CNN on one machine. Under accuracy_drop<=1% and size_ratio<=0.5:
    onnxruntime_static_int8 and openvino_int8 are tied (overlapping intervals), static_int8 is
    surely slower, pruned_structured+static_int8 breaks the accuracy budget, onnxruntime and
    eager break the size budget, dynamic_int8 is too noisy but small and accurate."""
    return [
        record("eager", 1.0, (0.98, 1.02)),
        record("onnxruntime", 2.0, (1.9, 2.1)),
        record("onnxruntime_static_int8", 4.0, (3.8, 4.3), size_ratio=0.26, accuracy=0.948),
        record("openvino_int8", 4.1, (3.9, 4.4), size_ratio=0.27, accuracy=0.946),
        record("static_int8", 3.0, (2.9, 3.1), size_ratio=0.26, accuracy=0.949),
        record("pruned_structured+static_int8", 6.0, (5.8, 6.2), size_ratio=0.13, accuracy=0.90),
        record(
            "dynamic_int8",
            1.5,
            (0.7, 4.2),
            size_ratio=0.3,
            accuracy=0.95,
            noisy="too noisy to judge: IQR/median of the per-round speedups 40% > 25%",
        ),
    ]


def search_entry(
    test: str,
    records: list[dict[str, Any]],
    *,
    recommended: str | None,
    tied: list[str],
    budgets: tuple[str, ...] = ("accuracy_drop <= 1.00%", "size_ratio <= 0.5x"),
    objective: str = "latency",
) -> dict[str, Any]:
    """A search's entry of a results file (``searches``), as the session writes it: its
    candidates' records (their tests renamed as the search names them) and what it chose."""
    spec = records[0]["spec"]
    return {
        "test": test,
        "spec": spec,
        "fingerprint": "box-a",
        "objective": {"name": objective, "metric": "speedup"},
        "budgets": list(budgets),
        "recommended": recommended,
        "tied": tied,
        "front": [],
        "verdict": f"recommended: {recommended}",
        "summary": f"search of {spec}: {len(records)} measured",
        "records": [{**r, "test": f"{spec}::search[{r['technique']}]"} for r in records],
    }


def results_document(
    records: list[dict[str, Any]],
    fingerprint: str = "box-a",
    created: str = "2026-12-01T10:00:00+00:00",
    searches: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    document = {
        "schema": 1,
        "created": created,
        "fingerprint": fingerprint,
        "hardware": {"cpu": {"brand": "Test CPU", "physical_cores": 2, "isa_level": "avx2"}},
        "environment": {"torch": "2.14.1"},
        "settings": {"max_time": 3.0},
        "results": records,
    }
    if searches is not None:
        document["searches"] = searches
    return document


def write_results(path: Path, records: list[dict[str, Any]], **kwargs: Any) -> Path:
    path.write_text(json.dumps(results_document(records, **kwargs)))
    return path
