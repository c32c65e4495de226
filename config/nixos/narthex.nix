# NixOS module for narthex: `services.narthex`. Import it and enable it:
#
#   imports = [ /path/to/narthex/config/nixos/narthex.nix ];
#   services.narthex = {
#     enable = true;
#     package = narthex;            # a derivation with bin/narthex
#     openFirewall = true;
#     settings.upstreams = [ { name = "nixos"; url = "https://cache.nixos.org";
#       publicKeys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ]; } ];
#   };
#
# `settings` is narthex's YAML configuration (config/README.md) as a Nix attribute set. The service
# is hardened as config/narthex.service is; keep the two in step (test/ops/nixos.test.ts compares
# them).
{ config, lib, pkgs, ... }:

let
  cfg = config.services.narthex;
  settingsFormat = pkgs.formats.yaml { };
  stateDir = "/var/lib/narthex";
  # "HOST:PORT", "[::1]:PORT": the port is what follows the last colon.
  port = lib.toInt (lib.last (lib.splitString ":" cfg.settings.listen));
in
{
  options.services.narthex = {
    enable = lib.mkEnableOption "narthex, a caching proxy for Nix binary caches";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The narthex package (a derivation with `bin/narthex`).";
    };

    settings = lib.mkOption {
      description = ''
        narthex's configuration (every key in config/README.md), rendered to YAML. It is in the
        Nix store, readable by every user: a configuration with push tokens belongs in
        `configFile` instead.
      '';
      default = { };
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options = {
          listen = lib.mkOption {
            type = lib.types.str;
            default = "0.0.0.0:5557";
            description = "`HOST:PORT` to serve on; `openFirewall` opens this port.";
          };
          dataDir = lib.mkOption {
            type = lib.types.str;
            default = stateDir;
            description = "The index, NAR files, signing key and audit log.";
          };
          signingKeyFile = lib.mkOption {
            type = lib.types.str;
            default = "${cfg.settings.dataDir}/narthex.key";
            defaultText = lib.literalExpression ''"''${config.services.narthex.settings.dataDir}/narthex.key"'';
            description = "narthex's secret key, created on first start if missing.";
          };
          upstreams = lib.mkOption {
            type = settingsFormat.type;
            default = [
              {
                name = "nixos";
                url = "https://cache.nixos.org";
                publicKeys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
              }
            ];
            description = "The caches narthex may ask (a definition replaces this default).";
          };
        };
      };
    };

    configFile = lib.mkOption {
      type = lib.types.path;
      default = settingsFormat.generate "narthex.yaml" cfg.settings;
      defaultText = lib.literalExpression "the YAML rendering of `settings`";
      description = ''
        The configuration file narthex reads. Point it at a file outside the Nix store (mode 0640,
        group narthex) when it holds secrets; `settings` is then ignored.
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the TCP port of `settings.listen` in the firewall.";
    };
  };

  config = lib.mkIf cfg.enable {
    users.users.narthex = {
      isSystemUser = true;
      group = "narthex";
      home = cfg.settings.dataDir;
      description = "narthex Nix cache proxy";
    };
    users.groups.narthex = { };

    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall port;

    systemd.tmpfiles.rules = lib.optional (cfg.settings.dataDir != stateDir) "d '${cfg.settings.dataDir}' 0750 narthex narthex - -";

    systemd.services.narthex = {
      description = "narthex, a caching proxy for Nix binary caches";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = {
        Type = "exec";
        User = "narthex";
        Group = "narthex";
        ExecStart = "${cfg.package}/bin/narthex serve --config ${cfg.configFile}";
        # SIGHUP re-reads the credential files only; a changed configuration restarts the service.
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        WorkingDirectory = cfg.settings.dataDir;
        StateDirectory = "narthex";
        StateDirectoryMode = "0750";
        ReadWritePaths = lib.optional (cfg.settings.dataDir != stateDir) cfg.settings.dataDir;
        UMask = "0027";

        # Exit code 2 is a bad configuration: restarting cannot help.
        Restart = "on-failure";
        RestartSec = "2s";
        RestartPreventExitStatus = "2";
        # SIGTERM to the primary only: it stops its workers (15 s) and then the core (10 s).
        KillMode = "mixed";
        KillSignal = "SIGTERM";
        TimeoutStopSec = "40s";
        LimitNOFILE = 65536;

        # As config/narthex.service. No MemoryDenyWriteExecute: V8's JIT needs W+X pages.
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        RemoveIPC = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
