"""hung: N deliveries to a webhook that accepts and never answers, then healthy alarms to
another host: how long the healthy ones wait, and how much the process tree grows."""

from __future__ import annotations

from scenarios import Scenario, ok, verdict
from scenarios.dead_hosts import blocked_run, healthy_verdicts

GROWTH_MB = 100.0


class Hung(Scenario):
    name = "hung"
    title = "many hung deliveries beside healthy ones"
    order = 50
    default_targets = ("ceilo-rpc", "ceilo-listener", "aodh", "stub")
    sizes = {"hung": (10000, 1000), "healthy": (100, 50), "cap_s": (30.0, 15.0)}

    def run_target(self, target_cls) -> dict:
        return blocked_run(self, target_cls, [(self.size("hung"), 1)], self.size("healthy"), 0,
                           self.size("cap_s"))  # fmt: skip

    def brief(self, res: dict) -> str:
        if not ok(res):
            return super().brief(res)
        return (f"healthy {res['healthy_delivered']}/{res['healthy_alarms']}, "
                f"p99 {res['healthy_p99_s']} s, RSS +{res['rss_tree_growth_mb']} MB")

    def rows(self, result: dict) -> list[list]:
        rows = []
        for name, v in result.items():
            if not ok(v):
                rows.append([name, self.name, f"ERROR {v.get('error', '')[:100]}"])
                continue
            n = v["blocked_alarms"][0]["alarms"]
            rows.append([name, f"{n} hung: healthy delivered within "
                         f"{v['waited_at_most_s']:g} s; p50 / p99 / max s",
                         f"{v['healthy_delivered']}/{v['healthy_alarms']}; "
                         f"{v['healthy_p50_s']} / {v['healthy_p99_s']} / {v['healthy_max_s']}"])
            rows.append([name, f"{n} hung: hung requests that reached the webhook",
                         v["blocked_requests_arrived"]])
            rows.append([name, f"{n} hung: RSS of the process tree before / peak / growth MB",
                         f"{v['rss_tree_mb_before']} / {v['rss_tree_mb_peak']} / "
                         f"{v['rss_tree_growth_mb']}"])
        return rows

    def verdicts(self, result: dict, results: dict) -> list[dict]:
        any_v = next((v for v in result.values() if ok(v)), None)
        n = any_v["blocked_alarms"][0]["alarms"] if any_v else "?"
        out = healthy_verdicts(self, result, f"healthy alarms behind {n} hung deliveries")
        aodh = result.get("aodh")
        for name in ("ceilo-rpc", "ceilo-listener"):
            v = result.get(name)
            if not ok(v):
                continue
            g = v["rss_tree_growth_mb"]
            out.append(verdict(
                f"{name}: RSS growth of the process tree under {n} hung <= {GROWTH_MB:g} MB",
                f"{aodh['rss_tree_growth_mb']} MB" if ok(aodh) else "-",
                f"{g} MB ({v['rss_tree_mb_before']} -> {v['rss_tree_mb_peak']} MB; "
                f"{v['blocked_requests_arrived']} hung requests reached the webhook)",
                g <= GROWTH_MB, f"{g - GROWTH_MB:.0f} MB",
                "peak of the RSS sum over the tree, sampled every 0.2 s, minus the sum before",
            ))  # fmt: skip
        return out
