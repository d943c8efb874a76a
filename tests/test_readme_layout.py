"""The README's layout section names every folder and module of the library, the app and the task layer."""

import re

from conftest import REPO


def layout_section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Layout\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_folder_under_src_app_and_cli_is_named_with_what_it_holds():
    section = layout_section()
    folders = [REPO / "cli", REPO / "app", REPO / "src" / "tand"]
    for root in folders:
        folders += [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    for folder in folders:
        line = next((ln for ln in section.splitlines() if re.search(rf"(^|\s|/){re.escape(folder.name)}/(\s|$)", ln)), None)
        assert line is not None, f"README layout does not name {folder.relative_to(REPO)}/"
        assert len(line.split()) > 1, f"README layout names {folder.name}/ without saying what it holds"


def test_every_module_is_named_in_its_folders_entry():
    section = layout_section()
    for folder in [REPO / "app", *(p for p in (REPO / "app").iterdir() if p.is_dir()), REPO / "src" / "tand",
                   *(p for p in (REPO / "src" / "tand").iterdir() if p.is_dir())]:  # fmt: skip
        for module in folder.glob("*.py"):
            if module.name == "__init__.py" or folder.name == "compiled":
                continue
            assert re.search(rf"\b{re.escape(module.stem)}\b", section), f"README layout does not name {module.relative_to(REPO)}"
