"""Build the IF-IMC shim and register it in /etc/tnc_config (`nac-agent install`)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("nac_imc.c")
LIB_NAME = "nac_imc.so"
IMC_NAME = "nac-agent"
DEFAULT_TNC_CONFIG = Path("/etc/tnc_config")
DEFAULT_PREFIX = Path("/usr/local")
EXPORTED = ("TNC_IMC_Initialize", "TNC_IMC_NotifyConnectionChange", "TNC_IMC_BeginHandshake",
            "TNC_IMC_ReceiveMessage", "TNC_IMC_BatchEnding", "TNC_IMC_Terminate",
            "TNC_IMC_ProvideBindFunction")


class InstallError(RuntimeError):
    pass


@dataclass
class InstallResult:
    library: Path
    tnc_config: Path
    config_changed: bool
    command: str


def agent_command() -> str:
    """The command the shim runs: this interpreter and this copy of the package."""
    pkg_parent = Path(__file__).resolve().parents[3]
    return (f"PYTHONPATH={shlex.quote(str(pkg_parent))}${{PYTHONPATH:+:$PYTHONPATH}} "
            f"exec {shlex.quote(sys.executable)} -m eap_ext.agent imc")


def _c_string(text: str) -> str:
    if any(ord(c) < 0x20 or ord(c) > 0x7E for c in text):
        raise InstallError("the agent command must be printable ASCII")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_library(out: Path, command: str | None = None, cc: str = "gcc") -> Path:
    compiler = shutil.which(cc)
    if compiler is None:
        raise InstallError(f"no C compiler ({cc}) to build the IMC")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target, then rename: a supplicant may dlopen the old file meanwhile.
    fd, tmp = tempfile.mkstemp(prefix=".nac_imc-", suffix=".so", dir=out.parent)
    os.close(fd)
    argv = [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-fvisibility=hidden",
            f"-DNAC_IMC_COMMAND={_c_string(command or agent_command())}",
            "-o", tmp, str(SOURCE)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise InstallError(f"compiling the IMC failed:\n{proc.stderr}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)
    return out


def imc_line(library: Path, name: str = IMC_NAME) -> str:
    return f'IMC "{name}" {library}'


def register(config: Path, library: Path, name: str = IMC_NAME) -> bool:
    """Make `config` hold exactly one IMC line for `name`, pointing at `library`.

    Other lines (other IMCs, IMVs, comments) are kept. Returns whether the file changed.
    """
    try:
        lines = config.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    prefix = f'IMC "{name}" '
    wanted = imc_line(library, name)
    ours = [ln for ln in lines if ln.startswith(prefix)]
    if ours == [wanted]:
        return False  # already registered: leave the file (and its order) alone
    new = [*(ln for ln in lines if not ln.startswith(prefix)), wanted]
    config.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tnc_config-", dir=config.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(new) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, config)
    return True


def install(prefix: Path = DEFAULT_PREFIX, tnc_config: Path = DEFAULT_TNC_CONFIG,
            command: str | None = None, name: str = IMC_NAME) -> InstallResult:
    command = command or agent_command()
    library = build_library(prefix / "lib" / "nac-agent" / LIB_NAME, command)
    changed = register(tnc_config, library, name)
    return InstallResult(library, tnc_config, changed, command)
