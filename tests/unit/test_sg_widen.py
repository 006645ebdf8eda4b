"""Which rule-chain changes can only let more through (no established flow to judge again)."""

from agent.firewall_render import widens_only

A1 = '-A mecs-i-k -p tcp -m tcp --dport 22 -m comment --comment "r:a1" -j RETURN'
A2 = '-A mecs-i-k -p tcp -m tcp --dport 80 -m comment --comment "r:a2" -j RETURN'
D1 = '-A mecs-i-k -p tcp -m tcp --dport 23 -m comment --comment "r:d1" -j DROP'
DROP, ACCEPT = "-A mecs-i-k -j DROP", "-A mecs-i-k -j RETURN"


def test_accepts_added_or_drops_removed_only_widen():
    assert widens_only([A1, DROP], [A2, A1, DROP])
    assert widens_only([A1, DROP], [A1, A2, DROP])
    assert widens_only([D1, A1, DROP], [A1, DROP])


def test_anything_else_may_drop_a_flow():
    assert not widens_only([A1, DROP], [D1, A1, DROP])  # a drop added
    assert not widens_only([A1, A2, DROP], [A1, DROP])  # an accept removed
    assert not widens_only([A1, A2, DROP], [A2, A1, DROP])  # reordered
    assert not widens_only([A1, ACCEPT], [A1, DROP])  # the default changed
    assert not widens_only([A1, DROP], [A2, DROP])  # one accept for another
    assert not widens_only([], [A1, DROP])  # a new chain: its NICs moved (judged anyway)
