"""Regenerate the demo's tables (they ship with the project; this script only documents how they were made):

- ``demo_churn.csv``: the 4,000 rows the demo study searches on;
- ``demo_churn_full.csv``: those rows and 2,000 more, the "full set" of the README's ``losstune train --data``;
- ``demo_churn_test.csv``: 1,000 new customers without the ``churn`` column, for the README's ``predict``.

A synthetic telecom-churn table: mixed numeric and categorical columns, a few missing cells, ~9% positives,
and a signal that is learnable but noisy, so that loss and threshold choices visibly matter.
"""

from pathlib import Path

import numpy as np
import pandas as pd


def make(n: int = 4000, seed: int = 7, first_id: int = 0, prefix: str = "C") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n)
    monthly = rng.normal(70, 25, n).clip(15, 150).round(2)
    plan = rng.choice(["basic", "standard", "premium"], n, p=[0.5, 0.35, 0.15])
    payment = rng.choice(["card", "bank", "konbini"], n, p=[0.5, 0.3, 0.2])
    calls = rng.poisson(1.5, n)
    age = rng.integers(18, 80, n).astype(float)
    logit = (
        -2.6 - 0.06 * tenure + 0.03 * (monthly - 70) + 0.7 * calls
        + np.where(plan == "basic", 0.9, 0.0) + np.where(payment == "konbini", 1.0, 0.0)
        + rng.normal(0, 0.5, n)
    )  # fmt: skip
    churn = rng.random(n) < 1 / (1 + np.exp(-logit))
    age[rng.random(n) < 0.03] = np.nan
    return pd.DataFrame(
        {
            "customer_id": [f"{prefix}{i:05d}" for i in range(first_id, first_id + n)],
            "tenure_months": tenure,
            "monthly_fee": monthly,
            "plan": plan,
            "payment": payment,
            "support_calls": calls,
            "age": age,
            "churn": np.where(churn, "yes", "no"),
        }
    )


def write_all(directory: Path) -> list[Path]:
    searched = make()
    tables = {
        "demo_churn.csv": searched,
        "demo_churn_full.csv": pd.concat([searched, make(n=2000, seed=8, first_id=4000)], ignore_index=True),
        "demo_churn_test.csv": make(n=1000, seed=9, prefix="T").drop(columns=["churn"]),
    }
    for name, table in tables.items():
        table.to_csv(directory / name, index=False)
    return [directory / name for name in tables]


if __name__ == "__main__":
    for path in write_all(Path(__file__).parent):
        print(f"wrote {path}")
