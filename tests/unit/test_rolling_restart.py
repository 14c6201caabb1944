"""The operator's drill's reading of HAProxy: its stats CSV gives each server's state.

tests/live/test_rolling_restart.py runs the drill itself behind real HAProxy."""

from __future__ import annotations

from harness.balancer import (
    parse_stats_csv,
)


def test_stats_csv_gives_each_servers_state():
    text = (
        "# pxname,svname,qcur,scur,status,check_status,chkdown,\n"
        "clients,FRONTEND,,5,OPEN,,,\n"
        "service,a,0,3,UP,L7OK,1,\n"
        "service,b,0,0,DOWN 1/2,L4CON,2,\n"
        "service,BACKEND,0,3,UP,,,\n"
    )
    states = parse_stats_csv(text)
    assert set(states) == {"a", "b"}
    assert states["a"].up and not states["a"].down and states["a"].sessions == 3
    assert states["b"].down and not states["b"].up and states["b"].down_transitions == 2
    assert states["b"].check_status == "L4CON"
