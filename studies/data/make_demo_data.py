"""Regenerate ``demo_churn.csv``, the small imbalanced table the demo study runs on (it ships with the project).

A synthetic telecom-churn table: mixed numeric and categorical columns, a few missing cells, ~9% positives,
and a signal that is learnable but noisy, so that loss and threshold choices visibly matter.
"""

from pathlib import Path

import numpy as np
import pandas as pd


def make(n: int = 4000, seed: int = 7) -> pd.DataFrame:
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
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "tenure_months": tenure,
            "monthly_fee": monthly,
            "plan": plan,
            "payment": payment,
            "support_calls": calls,
            "age": age,
            "churn": np.where(churn, "yes", "no"),
        }
    )


if __name__ == "__main__":
    out = Path(__file__).with_name("demo_churn.csv")
    make().to_csv(out, index=False)
    print(f"wrote {out}")
