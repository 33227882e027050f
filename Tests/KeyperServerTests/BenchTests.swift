import HummingbirdTesting
import KeyperBase
import KeyperTestSupport
import Testing
@testable import KeyperBench

@Suite("keyper bench")
struct BenchTests {
    @Test("The histogram is exact below 256 ns and within 1/128 above, up to its range")
    func histogramPrecision() {
        for value: UInt64 in [0, 1, 255, 256, 257, 511, 512, 1_000, 123_456, 9_876_543_210, 1 << 47] {
            let index = LatencyHistogram.index(of: value)
            let upper = LatencyHistogram.upperBound(of: index)
            #expect(upper >= value, "value \(value) above its bucket's bound \(upper)")
            #expect(Double(upper - value) <= Double(value) / 128, "value \(value): bucket too wide (\(upper))")
            if index > 0 { #expect(LatencyHistogram.upperBound(of: index - 1) < value) }
        }
        #expect(LatencyHistogram.index(of: .max) == LatencyHistogram.bucketCount - 1)
    }

    @Test("Percentiles of a known distribution, and merging")
    func percentiles() {
        var first = LatencyHistogram()
        var second = LatencyHistogram()
        for value in 1...1_000 as ClosedRange<UInt64> {
            if value % 2 == 0 { first.record(nanoseconds: value * 1_000) } else { second.record(nanoseconds: value * 1_000) }
        }
        var all = first
        all.merge(second)
        #expect(all.count == 1_000)
        #expect(all.min == 1_000 && all.max == 1_000_000)
        for (percentile, expected) in [(50.0, 500_000.0), (90, 900_000), (99, 990_000), (99.9, 999_000), (100, 1_000_000)] {
            let value = Double(all.value(atPercentile: percentile))
            #expect(value >= expected && value <= expected * (1 + 1.0 / 128), "p\(percentile) = \(value)")
        }
        #expect(abs(all.mean - 500_500) < 1)
        #expect(LatencyHistogram().value(atPercentile: 99) == 0)
    }

    @Test("A short run against a live node: kept-alive connections, reads find preloaded keys, no errors")
    func liveRun() async throws {
        try await withAPI(.live) { client in
            var options = BenchOptions()
            options.endpoints = [("127.0.0.1", try #require(client.port))]
            options.connections = 4
            options.duration = .milliseconds(500)
            options.keys = 20
            options.valueBytes = 100
            options.readRatio = 0.5
            let result = try await LoadGenerator.run(options)
            #expect(result.errors == 0)
            #expect(result.reads.latency.count > 0 && result.writes.latency.count > 0)
            #expect(result.reads.notFound == 0, "preloading writes every key before the run")
            #expect(result.requests == result.reads.ok + result.writes.ok)
            #expect(result.throughput > 0)
        }
    }

    @Test("A preload can load only part of a key space, and stop there")
    func partialPreload() async throws {
        try await withAPI(.live) { client in
            var options = BenchOptions()
            options.endpoints = [("127.0.0.1", try #require(client.port))]
            options.connections = 3
            options.keys = 30
            options.preloadFrom = 10
            options.preloadOnly = true
            options.seed = 1
            let load = try await LoadGenerator.run(options)
            #expect(load.preloadOnly && load.errors == 0)
            #expect(load.writes.ok == 20, "keys 10..<30, each once")
            // Keys below 10 were never written: random reads over all 30 find some missing.
            options.preload = false
            options.preloadOnly = false
            options.readRatio = 1
            options.duration = .milliseconds(300)
            let reads = try await LoadGenerator.run(options)
            #expect(reads.errors == 0 && reads.writes.latency.count == 0)
            #expect(reads.reads.notFound > 0 && reads.reads.notFound < reads.reads.latency.count)
        }
    }

    @Test("An endpoint that refuses connections gives errors, not a hang or a crash")
    func refusedEndpoint() async throws {
        let port = freePorts(1)[0]
        var options = BenchOptions()
        options.endpoints = [("127.0.0.1", port)]
        options.connections = 2
        options.duration = .milliseconds(300)
        options.preload = false
        let result = try await LoadGenerator.run(options)
        #expect(result.requests == 0)
        #expect(result.connectionErrors >= 2)
    }
}
