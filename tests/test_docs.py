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
