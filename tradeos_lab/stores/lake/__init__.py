"""The OHLCV lake: chdb embedded, a ClickHouse server, or the owner's lake gateway.

The owning process opens it with `Lake.open(settings)` and shares it with
`serve_gateway(lake, token)`; every other process uses `Lake.over_gateway(url, token)`.
"""

from tradeos_lab.stores.lake.backend import LakeBackend
from tradeos_lab.stores.lake.chdb_backend import ChdbBackend, lake_owner
from tradeos_lab.stores.lake.gateway import GatewayBackend, LakeGatewayServer, serve_gateway
from tradeos_lab.stores.lake.lake import Lake
from tradeos_lab.stores.lake.schema import ROLLS_INTO, TIERS, bars_table
from tradeos_lab.stores.lake.server_backend import ClickHouseServerBackend

__all__ = [
    "ROLLS_INTO",
    "TIERS",
    "ChdbBackend",
    "ClickHouseServerBackend",
    "GatewayBackend",
    "Lake",
    "LakeBackend",
    "LakeGatewayServer",
    "bars_table",
    "lake_owner",
    "serve_gateway",
]
