"""``castate completion bash|zsh|fish``: a shell completion script generated from the
command's own parser, so it always knows every command and option of this version."""

from __future__ import annotations

import argparse


def _commands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, list[str]]]:
    """command -> (its help line, its option strings)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                opts = sorted(o for a in sub._actions for o in a.option_strings if o.startswith("--"))
                out[name] = (helps.get(name, ""), opts)
    return out


def _globals(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(o for a in parser._actions for o in a.option_strings if o.startswith("--"))


def bash(parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    cases = "\n".join(f'    {name}) opts="{" ".join(opts)}" ;;' for name, (_, opts) in commands.items())
    return f"""# castate completion for bash: eval "$(castate completion bash)"
_castate() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} cmd="" i opts
  if [[ $prev == --store ]]; then COMPREPLY=($(compgen -d -- "$cur")); return; fi
  if [[ $prev == --key-file ]]; then COMPREPLY=($(compgen -f -- "$cur")); return; fi
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${{COMP_WORDS[i]}} in
      --store|--key-file) ((i++)) ;;
      -*) ;;
      *) cmd=${{COMP_WORDS[i]}}; break ;;
    esac
  done
  case $cmd in
    "") opts="{" ".join([*commands, *_globals(parser)])}" ;;
{cases}
    *) opts="" ;;
  esac
  if [[ -z $cmd || $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}}
complete -F _castate castate
"""


def zsh(parser: argparse.ArgumentParser) -> str:
    return (
        '#compdef castate\n# castate completion for zsh: eval "$(castate completion zsh)" (uses bashcompinit)\n'
        "autoload -U +X bashcompinit && bashcompinit\n" + bash(parser).split("\n", 1)[1]
    )


def fish(parser: argparse.ArgumentParser) -> str:
    lines = ["# castate completion for fish: castate completion fish | source"]
    for opt in _globals(parser):
        lines.append(f"complete -c castate -n __fish_use_subcommand -l {opt[2:]}")
    for name, (help_, opts) in _commands(parser).items():
        text = help_.replace("'", "\\'")
        lines.append(f"complete -c castate -n __fish_use_subcommand -a {name} -d '{text}'")
        for opt in opts:
            lines.append(f"complete -c castate -n '__fish_seen_subcommand_from {name}' -l {opt[2:]}")
    return "\n".join(lines) + "\n"


SHELLS = {"bash": bash, "zsh": zsh, "fish": fish}
