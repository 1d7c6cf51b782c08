"""evaluate.py's settings from the descriptions DANCE.py writes beside each condensed set (data_K.json).

A set's description holds the flags that decide how to use it. Precedence for evaluate.py: parser defaults <
the dataset's settings file < the set's description < flags given on the command line, except that a flag
may not contradict what a set IS (its dataset, or how its storage decodes): that is refused in one line.
"""
import glob
import os

from data.set_files import DECODING, IDENTITY, LOCATION, PROTOCOL, check_described_values, read_description
from utils import UserError


def data_paths(patterns):
    """The --data paths, globs expanded (sorted); a glob that matches nothing or a folder is an error."""
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UserError(f"--data {pattern} matches no file; check the path or the quotes around the glob")
        for path in matches:
            if os.path.isdir(path):
                raise UserError(f"--data {path} is a folder; pass the condensed sets in it, e.g. --data "
                                f"'{os.path.join(path, 'data_best.pt')}'")
            if not os.path.isfile(path):
                raise UserError(f"--data {path}: no such file; pass a data_*.pt written by DANCE.py")
        paths += matches
    return paths


def _contradiction(path, key, given, described):
    flag = "-d" if key == "dataset" else f"--{key}"
    described = "the dataset's own" if described is None else described
    return UserError(f"{flag} {given} contradicts {path}, which was condensed with {key} {described}; drop {flag} "
                     f"(evaluate.py reads it from the set's description, {os.path.basename(path)[:-3]}.json)")


def _flag_kinds(parser):
    """Each setting's (type, choices, default), as its flag takes it."""
    return {a.dest: (a.type, a.choices, a.default) for a in parser._actions}


def _experts_of(described, paths, explicit):
    """{'pretrain_dir': folder} when every set was condensed with the same experts (the default teacher of
    --labels soft is then the set's own expert 0); sets of different experts need --pretrain_dir for soft labels."""
    if "pretrain_dir" in explicit:
        return {}
    folders = {(d["run"].get("experts") or {}).get("folder") for d in described.values()}
    if len(folders) == 1 and None not in folders and len(described) == len(paths):
        return {"pretrain_dir": folders.pop()}
    if explicit.get("labels") == "soft" and len(folders - {None}) > 1:
        raise UserError(f"--labels soft: these sets were condensed with different experts "
                        f"({', '.join(sorted(folders - {None}))}); evaluate them in separate calls, or pass "
                        f"--pretrain_dir to choose one teacher for all")
    return {}


def described_settings(patterns, explicit, parser):
    """(common, per_set, paths): settings every set agrees on, each set's own settings, and the set paths.

    `common` holds the dataset identity (and location) of the described sets; `per_set[path]` the decoding,
    network and protocol of that set's run, except keys given on the command line.
    """
    paths = data_paths(patterns)
    described = {p: d for p in paths for d in [read_description(p)] if d is not None}
    common, per_set, first, kinds = {}, {}, None, _flag_kinds(parser)
    for path, desc in described.items():
        settings = desc["settings"]
        check_described_values(path, settings, kinds)
        for key in IDENTITY + DECODING:
            if key in explicit and key in settings and explicit[key] != settings[key]:
                raise _contradiction(path, key, explicit[key], settings[key])
        for key in IDENTITY:
            if first is not None and settings.get(key) != described[first]["settings"].get(key):
                raise UserError(f"{first} and {path} come from different data ({key} "
                                f"{described[first]['settings'].get(key)} vs {settings.get(key)}); evaluate them in "
                                f"separate calls")
        first = first or path
        per_set[path] = {k: settings[k] for k in DECODING + PROTOCOL if k in settings and k not in explicit}
    if first is not None:
        settings = described[first]["settings"]
        common = {k: settings[k] for k in IDENTITY + LOCATION if k in settings and k not in explicit}
        common.update(_experts_of(described, paths, explicit))
        if len(described) == len(paths):  # every set described: shared values become the call's own
            for key in DECODING + PROTOCOL:
                values = {repr(per_set[p].get(key)) for p in paths}
                if len(values) == 1 and key in per_set[paths[0]]:
                    common[key] = per_set[paths[0]][key]
    return common, per_set, paths
