# Evaluates config/nixos/narthex.nix for test/ops/nixos.test.ts, without nixpkgs:
# - `nixpkgsLib` null: the module function is applied to the few `lib` functions it uses and to
#   a fixed `config`, which yields its `config` section (what it sets) as data;
# - `nixpkgsLib` a path to nixpkgs' lib/: the real module system (lib.evalModules) with the
#   NixOS options the module sets declared loosely, so option types, defaults and merging are
#   nixpkgs' own.
# Either way the answer is { serviceConfig, unit, allowedTCPPorts, tmpfiles, settings }.
{ nixpkgsLib ? null, settings ? { }, openFirewall ? false }:

let
  module = ../../config/nixos/narthex.nix;
  package = "/nix/store/00000000000000000000000000000000-narthex";

  stubLib = {
    mkEnableOption = _: { };
    mkOption = option: option;
    mkIf = condition: value: if condition then value else { };
    optional = condition: x: if condition then [ x ] else [ ];
    literalExpression = text: text;
    toInt = builtins.fromJSON;
    last = list: builtins.elemAt list (builtins.length list - 1);
    splitString = sep: s: builtins.filter builtins.isString (builtins.split sep s);
    types = { package = "package"; bool = "bool"; str = "str"; path = "path"; submodule = s: s; };
  };

  fromStub =
    let
      cfg = {
        enable = true;
        inherit package openFirewall;
        configFile = "/etc/narthex/narthex.yaml";
        settings = { listen = "0.0.0.0:5557"; dataDir = "/var/lib/narthex"; } // settings;
      };
      pkgs = { formats.yaml = { }: { type = "yaml"; generate = _: _: cfg.configFile; }; coreutils = "/coreutils"; };
      out = (import module { lib = stubLib; inherit pkgs; config.services.narthex = cfg; }).config;
    in
    {
      service = out.systemd.services.narthex;
      allowedTCPPorts = out.networking.firewall.allowedTCPPorts;
      tmpfiles = out.systemd.tmpfiles.rules;
      settings = cfg.settings;
      configFile = cfg.configFile;
    };

  fromModuleSystem =
    let
      lib = import nixpkgsLib;
      # pkgs.formats.yaml's value type as nixpkgs defines it: any JSON value.
      valueType = with lib.types; nullOr (oneOf [ bool int float str path (attrsOf valueType) (listOf valueType) ]) // { description = "YAML value"; };
      pkgs.formats.yaml = { }: { type = valueType; generate = name: value: builtins.toFile name (builtins.toJSON value); };
      pkgs.coreutils = "/coreutils";
      loose = lib.mkOption { type = lib.types.attrsOf (lib.types.attrsOf lib.types.anything); default = { }; };
      nixosOptions = {
        options.users.users = loose;
        options.users.groups = loose;
        options.systemd.services = loose;
        options.networking.firewall.allowedTCPPorts = lib.mkOption { type = lib.types.listOf lib.types.port; default = [ ]; };
        options.systemd.tmpfiles.rules = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
      };
      eval = lib.evalModules {
        specialArgs = { inherit pkgs; };
        modules = [
          module
          nixosOptions
          { services.narthex = { enable = true; package = { outPath = package; type = "derivation"; }; inherit openFirewall settings; }; }
        ];
      };
      cfg = eval.config.services.narthex;
    in
    {
      service = eval.config.systemd.services.narthex;
      allowedTCPPorts = eval.config.networking.firewall.allowedTCPPorts;
      tmpfiles = eval.config.systemd.tmpfiles.rules;
      settings = cfg.settings;
      configFile = "${cfg.configFile}";
    };

  result = if nixpkgsLib == null then fromStub else fromModuleSystem;
in
{
  inherit (result) allowedTCPPorts tmpfiles settings configFile;
  inherit package;
  inherit (result.service) serviceConfig description wants after wantedBy;
}
