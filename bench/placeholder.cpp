// Benchmarks land with the policy server.
int main() {
    return 0;
}
