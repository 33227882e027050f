import KeyperServer

#if canImport(Glibc)
import Glibc
#endif

/// A node's settings from a configuration file (`--config`) and from `KEYPER_*` environment
/// variables, turned into the flags they stand for, placed before the command line's own so
/// that flags win over the environment, which wins over the file (the parser keeps the last
/// value of an option).
///
/// Not swift-configuration: every setting is already a flag parsed (and validated) by
/// ArgumentParser, and what the file may hold must be checked against that list (an unknown
/// key is an error naming it), which a key-value reader does not do. Mapping the two other
/// sources onto the flags keeps one parser and one set of checks.
enum ConfigurationSources {
    enum Kind {
        case text
        case number
        case flag
    }

    /// Every setting of `keyper serve`, by flag name (the file's key; `KEYPER_` and the name in
    /// capitals with `_` for `-` in the environment).
    static let settings: [String: Kind] = [
        "data-dir": .text, "http-addr": .text, "node-id": .text, "enable-raft": .flag, "raft-addr": .text, "join": .text,
        "tick-interval": .text, "election-timeout": .text, "heartbeat-interval": .text, "snapshot-entries": .number,
        "snapshot-catch-up-entries": .number, "wal-truncate-corrupt": .flag, "enable-fault-injection": .flag,
        "request-timeout": .text, "log-level": .text, "log-format": .text, "max-value-bytes": .number, "max-key-bytes": .number,
        "history-revisions": .number, "watch-progress-interval": .text,
    ]

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// The arguments to parse: `arguments` (without the program name) with the file's and the
    /// environment's settings inserted when they run a node.
    static func expand(_ arguments: [String], environment: [String: String]) throws(Failure) -> [String] {
        // A node runs for `keyper serve …` and for `keyper` with only flags (serve is the default).
        let serving: [String]
        if arguments.first == "serve" {
            serving = Array(arguments.dropFirst())
        } else if arguments.first.map({ $0.hasPrefix("-") }) ?? true,
                  !arguments.contains(where: { ["-h", "--help", "--version", "--generate-completion-script"].contains($0) }) {
            serving = arguments
        } else {
            return arguments
        }
        var path = environment["KEYPER_CONFIG"]
        if let index = serving.firstIndex(of: "--config"), index + 1 < serving.count { path = serving[index + 1] }
        if let config = serving.first(where: { $0.hasPrefix("--config=") }) { path = String(config.dropFirst("--config=".count)) }
        var flags: [String] = []
        if let path { flags += try fileFlags(path) }
        flags += try environmentFlags(environment)
        return ["serve"] + flags + serving
    }

    static func environmentFlags(_ environment: [String: String]) throws(Failure) -> [String] {
        var flags: [String] = []
        for (name, kind) in settings.sorted(by: { $0.key < $1.key }) {
            let variable = "KEYPER_" + name.uppercased().replacingDashes
            guard let value = environment[variable] else { continue }
            switch kind {
            case .flag:
                switch value.lowercased() {
                case "true", "1", "yes": flags.append("--" + name)
                case "false", "0", "no", "": break
                default: throw Failure(description: "\(variable) must be true or false (got \"\(value)\")")
                }
            case .text, .number:
                flags += ["--" + name, value]
            }
        }
        return flags
    }

    /// The file's settings as flags. The file is JSON: an object of settings by flag name,
    /// `{"data-dir": "/var/lib/keyper", "enable-raft": true, "snapshot-entries": 10000}`.
    static func fileFlags(_ path: String) throws(Failure) -> [String] {
        guard let bytes = readFile(path) else { throw Failure(description: "cannot read the configuration file \(path): errno \(errno)") }
        let document: JSONValue
        do { document = try JSONValue.parse(bytes) } catch {
            throw Failure(description: "the configuration file \(path) is not JSON: \(error)")
        }
        guard case .object(let fields) = document else {
            throw Failure(description: "the configuration file \(path) must be a JSON object of settings, such as {\"data-dir\": \"/var/lib/keyper\"}")
        }
        var flags: [String] = []
        for (key, value) in fields {
            guard let kind = settings[key] else {
                throw Failure(description: "the configuration file \(path) has an unknown key \"\(key)\" (known: \(settings.keys.sorted().joined(separator: ", ")))")
            }
            switch (kind, value) {
            case (.flag, .bool(let on)):
                if on { flags.append("--" + key) }
            case (.text, .string(let text)):
                flags += ["--" + key, String(decoding: text, as: UTF8.self)]
            case (.number, .number(let text)):
                flags += ["--" + key, text]
            default:
                let expected = switch kind {
                case .flag: "true or false"
                case .text: "a string"
                case .number: "a number"
                }
                throw Failure(description: "the configuration file \(path): \"\(key)\" must be \(expected) (got \(value.kind))")
            }
        }
        return flags
    }
}

/// The whole file, or nil when it cannot be read.
func readFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count == 0 { break }
        bytes += buffer[..<count]
    }
    return bytes
}

extension String {
    fileprivate var replacingDashes: String { String(map { $0 == "-" ? "_" : $0 }) }
}
