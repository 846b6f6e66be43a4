#!/usr/bin/env python3
"""Plays the Dockerfile without a container engine, as far as that can go.

  python3 .ci/play-dockerfile.py WORK

Each stage gets a directory under WORK that stands for its root filesystem. COPY copies
exactly what it names: out of the build context that .dockerignore leaves, or out of an
earlier stage. RUN runs in the stage's WORKDIR with this machine's tools, which must match
the stage's base image (the Rust toolchain does: rust-toolchain.toml pins it). The last
stage's ENTRYPOINT, CMD and HEALTHCHECK are written to WORK/image.json with their absolute
paths moved into its root, for .ci/image-check.sh to run.

What this cannot see: the base images themselves, USER and file ownership in a real
image, and anything the engine adds. The real build runs where an engine is available.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(message):
    print(f"Dockerfile: {message}", file=sys.stderr)
    sys.exit(1)


def instructions(text):
    """(keyword, rest) for each instruction: comment lines dropped, continuations joined."""
    result, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    if pending.strip():
        fail("the last instruction ends with a line continuation")
    return result


class DockerIgnore:
    """The build context's filter, as Docker reads .dockerignore: each pattern matches a
    path or any of its parent directories; the last pattern that matches decides, and a
    pattern starting with ! lets the path back in."""

    def __init__(self, text):
        self.patterns = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
            self.patterns.append((keep, re.compile(self.regex(pattern))))

    @staticmethod
    def regex(pattern):
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return f"^{out}$"

    def excludes(self, path):
        parts = path.split("/")
        parents = ["/".join(parts[: n + 1]) for n in range(len(parts) - 1)]
        excluded = False
        for keep, regex in self.patterns:
            if regex.match(path) or any(regex.match(parent) for parent in parents):
                excluded = not keep
        return excluded


def copy_from_context(ignore, source, destination):
    """Copies a context path (a file, or a directory's contents) that .dockerignore
    leaves; fails when nothing of it is left."""
    source = os.path.normpath(source.lstrip("/"))
    full = os.path.join(REPO, source)
    if not os.path.exists(full):
        fail(f"COPY names {source}, which the repository does not have")
    if os.path.isfile(full):
        if ignore.excludes(source):
            fail(f"COPY names {source}, which .dockerignore keeps out of the build context")
        copy_file(full, destination)
        return
    copied = 0
    for directory, _, names in os.walk(full):
        for name in names:
            path = os.path.relpath(os.path.join(directory, name), REPO)
            if ignore.excludes(path):
                continue
            copy_file(os.path.join(REPO, path), os.path.join(destination, os.path.relpath(path, source)))
            copied += 1
    if copied == 0:
        fail(f"COPY names {source}/, of which .dockerignore leaves nothing")


def copy_file(source, destination):
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    shutil.copy2(source, destination)


def exec_form(rest):
    """A JSON-array (exec form) argument list; shell form is refused where the image has
    no shell."""
    try:
        words = json.loads(rest)
    except json.JSONDecodeError:
        fail(f"{rest!r}: use the exec form [\"...\"]: the runtime image has no shell")
    if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
        fail(f"{rest!r} is not a list of strings")
    return words


def main():
    work = os.path.abspath(sys.argv[1])
    with open(os.path.join(REPO, "Dockerfile")) as f:
        steps = instructions(f.read())
    ignore_path = os.path.join(REPO, ".dockerignore")
    ignore = DockerIgnore(open(ignore_path).read() if os.path.exists(ignore_path) else "")

    stages = {}  # name or index -> root directory
    env = dict(os.environ)
    root = workdir = None
    image = {"entrypoint": [], "cmd": [], "healthcheck": None, "expose": [], "user": None}
    for keyword, rest in steps:
        if keyword == "FROM":
            words = rest.split()
            index = len(set(stages.values()))
            root = os.path.join(work, f"stage-{index}")
            os.makedirs(root)
            stages[str(index)] = root
            if len(words) == 3 and words[1].upper() == "AS":
                stages[words[2]] = root
            workdir = "/"
            env = dict(os.environ)
            image = {"entrypoint": [], "cmd": [], "healthcheck": None, "expose": [], "user": None}
            print(f"-- FROM {rest} (played in {root})")
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                name, equals, value = pair.partition("=")
                if not equals:
                    fail(f"ENV {rest}: write NAME=value")
                env[name] = value
        elif keyword == "WORKDIR":
            workdir = os.path.join(workdir, rest)
            os.makedirs(root + workdir, exist_ok=True)
        elif keyword == "COPY":
            words = shlex.split(rest)
            origin = None
            while words and words[0].startswith("--"):
                flag = words.pop(0)
                if flag.startswith("--from="):
                    origin = flag.split("=", 1)[1]
                else:
                    fail(f"COPY {flag} is not played by this check")
            *sources, destination = words
            target = root + os.path.join(workdir, destination)
            into_dir = destination.endswith("/") or len(sources) > 1
            for source in sources:
                if origin is None:
                    full = os.path.join(REPO, source.lstrip("/"))
                    if into_dir and os.path.isfile(full):
                        copy_from_context(ignore, source, os.path.join(target, os.path.basename(source)))
                    else:
                        copy_from_context(ignore, source, target)
                else:
                    if origin not in stages:
                        fail(f"COPY --from={origin}: no such stage")
                    found = stages[origin] + source
                    if not os.path.isfile(found):
                        fail(f"COPY --from={origin} {source}: the stage did not make it")
                    copy_file(found, os.path.join(target, os.path.basename(source)) if into_dir else target)
            print(f"-- COPY {rest}")
        elif keyword == "RUN":
            cwd = root + workdir
            # The build's target directory is kept between plays, as a builder's layer
            # cache would keep it, apart from the repository's own.
            if not os.path.exists(os.path.join(cwd, "target")):
                cache = os.path.join(REPO, "target", "play-dockerfile")
                os.makedirs(cache, exist_ok=True)
                os.symlink(cache, os.path.join(cwd, "target"))
            print(f"-- RUN {rest}", flush=True)
            if subprocess.run(["sh", "-c", rest], cwd=cwd, env=env).returncode != 0:
                fail(f"RUN {rest} failed in {cwd}")
        elif keyword == "USER":
            image["user"] = rest
        elif keyword == "EXPOSE":
            image["expose"] = [int(port.split("/")[0]) for port in rest.split()]
        elif keyword == "ENTRYPOINT":
            image["entrypoint"] = exec_form(rest)
        elif keyword == "CMD":
            image["cmd"] = exec_form(rest)
        elif keyword == "HEALTHCHECK":
            _, _, command = rest.partition("CMD ")
            image["healthcheck"] = exec_form(command.strip())
        else:
            fail(f"{keyword} is not played by this check; teach .ci/play-dockerfile.py")

    def inside(words):
        # Absolute paths the image holds are moved into the played root.
        return [root + w if w.startswith("/") and os.path.exists(root + w) else w for w in words]

    image["root"] = root
    image["command"] = inside(image["entrypoint"] + image["cmd"])
    image["healthcheck"] = inside(image["healthcheck"] or [])
    with open(os.path.join(work, "image.json"), "w") as f:
        json.dump(image, f, indent=2)
    print(f"-- the image's root filesystem is {root}")


if __name__ == "__main__":
    main()
