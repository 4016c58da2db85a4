import importlib.util
from pathlib import Path

DOCS = Path(__file__).parent.parent / "docs"


def test_config_reference_documents_every_key_with_its_default():
    spec = importlib.util.spec_from_file_location("generate", DOCS / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert (DOCS / "config.md").read_text() == generate.config_reference(), "run docs/generate.py"


def test_the_preflight_schema_matches_the_registries():
    import json

    spec = importlib.util.spec_from_file_location("generate", DOCS / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert json.loads(generate.SCHEMA.read_text()) == generate.schema(), "run docs/generate.py"


def test_the_readme_is_a_front_page_and_its_links_resolve():
    import re

    readme = DOCS.parent / "README.md"
    assert len(readme.read_bytes()) <= 8192, "the README holds what a newcomer needs first; details go in docs/"
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme.read_text()):
        assert (readme.parent / link).exists(), link
