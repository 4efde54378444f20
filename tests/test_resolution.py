import math

import pytest

from text2earth.core import resolution as r


@pytest.mark.parametrize(
    "gsd,level", [(0.5, 18), (1, 17), (2, 16), (10, 17 - math.log2(10)), (128, 10), (30, 17 - math.log2(30))]
)
def test_gsd_level_round_trip(gsd, level):
    assert r.gsd_to_level(gsd) == pytest.approx(level)
    assert r.level_to_gsd(r.gsd_to_level(gsd)) == pytest.approx(gsd)


def test_fractional_levels_and_unknown():
    assert r.level_to_gsd(13.5) == pytest.approx(2**3.5)
    assert r.level_to_gsd(0) is None
    assert r.gsd_to_level(None) == 0.0
    assert r.describe(0) == "L0 (unknown)"
    assert r.describe(17) == "L17 (1 m/px)"


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "abc", 2.0**20])
def test_bad_gsd(bad):
    with pytest.raises(ValueError, match="gsd_m"):
        r.gsd_to_level(bad)


@pytest.mark.parametrize("bad", [-0.5, 24.5, float("nan"), "x", None])
def test_bad_level(bad):
    with pytest.raises(ValueError, match="level"):
        r.check_level(bad)


def test_prompt_prefix():
    assert r.parse_prompt("17_GOOGLE_LEVEL_a harbour with boats") == ("a harbour with boats", 17.0)
    assert r.parse_prompt("13.5_GOOGLE_LEVEL_fields") == ("fields", 13.5)
    assert r.parse_prompt("fields near 17_GOOGLE_LEVEL_x") == ("fields near 17_GOOGLE_LEVEL_x", None)
    assert r.format_prompt("a harbour", 17.0) == "17_GOOGLE_LEVEL_a harbour"
    assert r.parse_prompt(r.format_prompt("a b", 12.25)) == ("a b", 12.25)
    with pytest.raises(ValueError):
        r.parse_prompt("30_GOOGLE_LEVEL_out of range")


def test_resolve_levels():
    assert r.resolve_levels(3, level=17) == [17.0] * 3
    assert r.resolve_levels(2, gsd_m=[1, None]) == [17.0, 0.0]
    assert r.resolve_levels(2) == [0.0, 0.0]
    with pytest.raises(ValueError, match="not both"):
        r.resolve_levels(1, level=1, gsd_m=1)
    with pytest.raises(ValueError, match="2 resolution values for 3"):
        r.resolve_levels(3, level=[1, 2])
