from __future__ import annotations

from pathlib import Path

import pytest

from qmtl.errors import DeployError, QmtlError
from qmtl_deploy import extract_dependencies, parse_dependencies
from qmtl_deploy.dependencies import referenced_files


def names(requirements: list) -> list[str]:
    return [str(r) for r in requirements]


def test_requirements_txt_is_preferred_over_pyproject(make_project) -> None:
    project = make_project({"requirements.txt": "qmtl-core\n", "pyproject.toml": ""})
    found = extract_dependencies(project_dir=project)
    assert isinstance(found, Path)
    assert found.name == "requirements.txt"
    assert str(found).endswith("requirements.txt")


def test_pyproject_is_used_without_requirements_txt(make_project) -> None:
    project = make_project({"pyproject.toml": "[project]\nname='x'\n"})
    assert extract_dependencies(project).name == "pyproject.toml"


def test_no_dependency_file_names_both_choices(make_project) -> None:
    project = make_project({"main.py": ""})
    with pytest.raises(DeployError, match=r"No requirements.txt or pyproject.toml"):
        extract_dependencies(project)


def test_requirements_with_comments_options_includes_and_continuations(make_project) -> None:
    project = make_project(
        {
            "requirements.txt": """\
                # pinned for production
                --index-url https://pypi.org/simple
                -r requirements/base.txt
                -c constraints.txt
                pandas>=2.0  # inline comment
                numpy==2.1.0 \\
                    --hash=sha256:abcdef0123456789
                qmtl-engine-kafka[redis] ; python_version >= "3.11"

                mylib @ https://example.com/mylib-1.0-py3-none-any.whl
                """,
            "requirements/base.txt": "qmtl-core>=0.1,<0.2\n--requirement=more.txt\n",
            "requirements/more.txt": "structlog\n",
            "constraints.txt": "urllib3<3\n",
        }
    )
    parsed = parse_dependencies(project / "requirements.txt")
    assert [r.name for r in parsed] == [
        "qmtl-core",
        "structlog",
        "pandas",
        "numpy",
        "qmtl-engine-kafka",
        "mylib",
    ]
    assert parsed[0].specifier.contains("0.1.5") and not parsed[0].specifier.contains("0.2.0")
    assert str(parsed[3].specifier) == "==2.1.0"  # the --hash option is not part of it
    assert parsed[4].extras == {"redis"} and str(parsed[4].marker) == 'python_version >= "3.11"'
    assert parsed[5].url == "https://example.com/mylib-1.0-py3-none-any.whl"
    # Constraints are not requirements, but the Dockerfile must copy every referenced file.
    assert [
        p.relative_to(project).as_posix() for p in referenced_files(project / "requirements.txt")
    ] == [
        "requirements.txt",
        "requirements/base.txt",
        "requirements/more.txt",
        "constraints.txt",
    ]


def test_directory_argument_parses_the_discovered_file(make_project) -> None:
    project = make_project(
        {
            "pyproject.toml": """\
                [project]
                name = "strategy"
                version = "1.0"
                dependencies = ["qmtl-core>=0.1", "numpy; platform_machine == 'x86_64'"]
                """
        }
    )
    assert names(parse_dependencies(project)) == [
        "qmtl-core>=0.1",
        'numpy; platform_machine == "x86_64"',
    ]


def test_dynamic_dependencies_are_reported(make_project) -> None:
    project = make_project(
        {"pyproject.toml": '[project]\nname = "x"\ndynamic = ["dependencies"]\n'}
    )
    with pytest.raises(DeployError, match="dynamic"):
        parse_dependencies(project)


def test_invalid_line_names_file_and_line(make_project) -> None:
    project = make_project({"requirements.txt": "pandas\nnot a requirement!!\n"})
    with pytest.raises(DeployError, match=r"requirements.txt:2: 'not a requirement!!'") as info:
        parse_dependencies(project)
    assert isinstance(info.value, QmtlError)


def test_editable_install_is_rejected_with_the_fix(make_project) -> None:
    project = make_project({"requirements.txt": "-e .\n"})
    with pytest.raises(DeployError, match="editable install"):
        parse_dependencies(project)


def test_missing_include_names_the_including_file(make_project) -> None:
    project = make_project({"requirements.txt": "-r missing.txt\n"})
    with pytest.raises(DeployError, match=r"missing.txt' does not exist \(included from"):
        parse_dependencies(project)


def test_include_loop_is_reported(make_project) -> None:
    project = make_project({"requirements.txt": "-r b.txt\n", "b.txt": "-r requirements.txt\n"})
    with pytest.raises(DeployError, match="loop"):
        parse_dependencies(project)
