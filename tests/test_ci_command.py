"""CI runs the README's test command, on one worker per core with the long property test first."""
import re
from pathlib import Path

import pytest

from conftest import pytest_collection_modifyitems

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_test_command_the_readme_opens_with():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python -m pytest")]
    opening = (ROOT / "README.md").read_text().split("## ")[0]       # the two commands before the first section
    assert len(ci) == 1 and ci[0] in opening
    assert re.search(r"-n \S+ --dist loadscope --no-loadscope-reorder\b", ci[0]), ci[0]   # see conftest


class _Item:
    def __init__(self, name, e2e=False):
        self.name, self.e2e = name, e2e

    def get_closest_marker(self, name):
        return object() if name == "e2e" and self.e2e else None


@pytest.mark.parametrize("position", [0, 3, 6])
def test_the_e2e_check_is_sent_out_first_and_the_rest_keep_their_order(position):
    items = [_Item(f"t{i}") for i in range(6)]
    items.insert(position, _Item("property", e2e=True))
    pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["property"] + [f"t{i}" for i in range(6)]
