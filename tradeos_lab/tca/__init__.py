"""Transaction cost analysis: what executions cost against the market, what signals earned.

Pure computations over numbers and frames (`costs`, `outcomes`) and the shadow fill that runs the
paper broker's fill model beside a real venue's fill (`shadow`). The pipeline's `tca` service
(`tradeos_lab.pipeline.services.tca`) feeds them from the records and the cache.
"""

from tradeos_lab.tca.costs import Shortfall, implementation_shortfall, side_sign, slippage_bps
from tradeos_lab.tca.outcomes import (
    HorizonResult,
    Scores,
    horizon_result,
    information_coefficient,
    rolling_scores,
    scores,
)
from tradeos_lab.tca.shadow import ShadowFill, shadow_fill

__all__ = [
    "HorizonResult",
    "Scores",
    "ShadowFill",
    "Shortfall",
    "horizon_result",
    "implementation_shortfall",
    "information_coefficient",
    "rolling_scores",
    "scores",
    "shadow_fill",
    "side_sign",
    "slippage_bps",
]
