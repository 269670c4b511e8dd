;; Rendezvous property and invariant tests for rec-nft (appended to the contract by `rv`).
;; Run: npx rv . rec-nft invariant --runs=N   and   npx rv . rec-nft test --runs=N

;; ---- fixture, executed at deploy: one approved facility, four certificates owned by the
;; deployer. This contract acts as the approving verifier because a verifier may not decide on
;; its own facility; the deployer is a verifier too so random calls can exercise revoke.
(define-constant FUZZ-EVIDENCE 0x0000000000000000000000000000000000000000000000000000000000000001)

(define-private (fuzz-issue (hour uint) (wh uint))
  (let ((report-id (try! (contract-call? .verification submit-report u1 (* hour u3600) (* (+ hour u1) u3600) wh FUZZ-EVIDENCE))))
    (try! (as-contract (contract-call? .verification attest-report report-id)))
    (mint report-id "ipfs://fuzz")))

(define-private (fuzz-fixture)
  (begin
    (try! (contract-call? .verification add-verifier (as-contract tx-sender) u"fuzz verifier"))
    (try! (contract-call? .verification add-verifier tx-sender u"deployer verifier"))
    (try! (contract-call? .verification register-facility u"Fuzz Farm" "US" "US-TX" "US-ERCOT" "ERCOT"
            0 0 "ES100" "TC110" u1000000000 u1 none false "" "" "ipfs://facility"))
    (try! (as-contract (contract-call? .verification approve-facility u1)))
    (try! (fuzz-issue u0 u1000))
    (try! (fuzz-issue u1 u777))
    (try! (fuzz-issue u2 u50000))
    (try! (fuzz-issue u3 u64))
    ;; spread ownership so more random callers own something
    (try! (transfer u2 tx-sender 'ST1SJ3DTE5DN7X54YDH5D64R3BCB6A2AG2ZQ8YPD5))
    (transfer u3 tx-sender 'ST2CY5V39NHDPWSXMW9QDT3HC3GD6Q6XX4CFRK9AG)))

(unwrap-panic (fuzz-fixture))

;; ---- actions the invariant campaign draws from (besides the contract's own functions):
;; they aim random seeds at existing tokens so the campaign reaches deep states.
(define-private (fuzz-pick (seed uint))
  (+ u1 (mod seed (var-get last-token-id))))

(define-public (fuzz-transfer (seed uint) (recipient principal))
  (transfer (fuzz-pick seed) tx-sender recipient))

(define-public (fuzz-split (seed uint) (cut uint))
  (let ((token-id (fuzz-pick seed))
        (wh (default-to u0 (get-wh token-id))))
    (asserts! (>= wh u2) ERR-INVALID-SPLIT)
    (let ((first (+ u1 (mod cut (- wh u1)))))
      (split token-id (list first (- wh first))))))

(define-public (fuzz-split-three (seed uint) (cut uint))
  (let ((token-id (fuzz-pick seed))
        (wh (default-to u0 (get-wh token-id))))
    (asserts! (>= wh u3) ERR-INVALID-SPLIT)
    (let ((first (+ u1 (mod cut (- wh u2)))))
      (split token-id (list first u1 (- wh (+ first u1)))))))

(define-public (fuzz-retire (seed uint))
  (retire (fuzz-pick seed) u"Fuzz Beneficiary" none "US" "" "US-ERCOT" u1 u2 u2024 "fuzz"))

(define-public (fuzz-revoke (seed uint))
  (revoke (fuzz-pick seed) u"fuzz"))

;; ---- invariants

(define-constant FUZZ-IDS (list
  u1 u2 u3 u4 u5 u6 u7 u8 u9 u10 u11 u12 u13 u14 u15 u16 u17 u18 u19 u20
  u21 u22 u23 u24 u25 u26 u27 u28 u29 u30 u31 u32 u33 u34 u35 u36 u37 u38 u39 u40
  u41 u42 u43 u44 u45 u46 u47 u48 u49 u50 u51 u52 u53 u54 u55 u56 u57 u58 u59 u60
  u61 u62 u63 u64 u65 u66 u67 u68 u69 u70 u71 u72 u73 u74 u75 u76 u77 u78 u79 u80
  u81 u82 u83 u84 u85 u86 u87 u88 u89 u90 u91 u92 u93 u94 u95 u96 u97 u98 u99 u100
  u101 u102 u103 u104 u105 u106 u107 u108 u109 u110 u111 u112 u113 u114 u115 u116 u117 u118 u119 u120))

;; Wh conservation: the per-status ledger always sums to what was issued.
(define-read-only (invariant-wh-conserved)
  (is-eq (var-get issued-wh)
         (+ (status-wh "active") (status-wh "listed") (status-wh "retired") (status-wh "revoked"))))

(define-private (live-wh-step (token-id uint) (acc uint))
  (match (map-get? certificates token-id)
    c (if (is-eq (get status c) "split") acc (+ acc (get wh c)))
    acc))

;; Live tokens (every status but split) hold exactly the issued Wh, so splits neither create nor
;; lose energy. Checked while the token count fits FUZZ-IDS.
(define-read-only (invariant-live-tokens-sum-to-issued)
  (or (> (var-get last-token-id) (len FUZZ-IDS))
      (is-eq (fold live-wh-step FUZZ-IDS u0) (var-get issued-wh))))

(define-private (live-interval (token-id uint))
  (match (map-get? certificates token-id)
    c (if (or (is-eq (get status c) "split") (is-eq (get wh c) u0))
          { s: u0, e: u0 }
          { s: (get serial-start c), e: (get serial-end c) })
    { s: u0, e: u0 }))

(define-private (count-overlaps (b { s: uint, e: uint }) (acc { a: { s: uint, e: uint }, n: uint }))
  (let ((a (get a acc)))
    (if (and (< (get s a) (get e b)) (< (get s b) (get e a)))
      (merge acc { n: (+ (get n acc) u1) })
      acc)))

(define-private (overlaps-of (a { s: uint, e: uint }) (acc { all: (list 120 { s: uint, e: uint }), n: uint }))
  ;; every non-empty interval overlaps itself exactly once
  (let ((hits (get n (fold count-overlaps (get all acc) { a: a, n: u0 }))))
    (merge acc { n: (+ (get n acc) (if (is-eq (get s a) (get e a)) u0 (- hits u1))) })))

;; Serial intervals of live tokens never overlap and all lie below the serial counter.
(define-read-only (invariant-serials-disjoint)
  (let ((ids (unwrap-panic (slice? FUZZ-IDS u0 (if (> (var-get last-token-id) u40) u40 (var-get last-token-id)))))
        (intervals (map live-interval ids)))
    (and (is-eq (get n (fold overlaps-of intervals { all: intervals, n: u0 })) u0)
         (>= (var-get last-serial) (fold max-end intervals u0)))))

(define-private (max-end (i { s: uint, e: uint }) (acc uint))
  (if (> (get e i) acc) (get e i) acc))

(define-private (retired-in-place (token-id uint) (ok-so-far bool))
  (and ok-so-far
    (match (map-get? retirements token-id)
      r (is-eq (nft-get-owner? rec token-id) (some (get owner r)))
      true)))

;; A retired token never moves: it stays with the account recorded at retirement.
(define-read-only (invariant-retired-never-move)
  (fold retired-in-place FUZZ-IDS true))

(define-private (escrow-step (token-id uint) (acc { held: uint, ok: bool }))
  (let ((in-escrow (is-escrowed token-id))
        (status (default-to "" (get status (map-get? certificates token-id)))))
    { held: (if in-escrow (+ (get held acc) u1) (get held acc)),
      ok: (and (get ok acc)
               (is-eq (is-eq status "listed") (and in-escrow (not (is-eq status "revoked"))))
               (if in-escrow
                 (and (is-eq (nft-get-owner? rec token-id) (some (var-get marketplace)))
                      (or (is-eq status "listed") (is-eq status "revoked")))
                 true)) }))

;; Escrowed tokens belong to the marketplace, are exactly the listed ones (plus any revoked while
;; listed) and the escrow counter agrees; random transfers can never put a token in escrow.
(define-read-only (invariant-escrow-consistent)
  (let ((r (fold escrow-step FUZZ-IDS { held: u0, ok: true })))
    (and (get ok r) (is-eq (get held r) (var-get escrowed-count)))))

;; ---- property tests

(define-read-only (can-test-split-conserves-wh (seed uint) (cut uint))
  (let ((token-id (fuzz-pick seed)))
    (and (is-eq (nft-get-owner? rec token-id) (some tx-sender))
         (is-eq (get-status token-id) (some "active"))
         (>= (default-to u0 (get-wh token-id)) u2)
         (not (var-get paused)))))

(define-private (check-child (child { token-id: uint, wh: uint, serial-start: uint, serial-end: uint })
                             (acc { next: uint, sum: uint, ok: bool, parent: uint }))
  (let ((stored (unwrap-panic (map-get? certificates (get token-id child)))))
    { next: (get serial-end child),
      sum: (+ (get sum acc) (get wh child)),
      parent: (get parent acc),
      ok: (and (get ok acc)
               (is-eq (get serial-start child) (get next acc))
               (is-eq (- (get serial-end child) (get serial-start child)) (get wh child))
               (is-eq (get wh stored) (get wh child))
               (is-eq (get parent-id stored) (some (get parent acc)))
               (is-eq (get status stored) "active")
               (is-eq (nft-get-owner? rec (get token-id child)) (some tx-sender))) }))

(define-public (test-split-conserves-wh (seed uint) (cut uint))
  (let ((token-id (fuzz-pick seed))
        (parent (unwrap-panic (map-get? certificates token-id)))
        (wh (get wh parent))
        (first (+ u1 (mod cut (- wh u1))))
        (children (try! (split token-id (list first (- wh first)))))
        (r (fold check-child children { next: (get serial-start parent), sum: u0, ok: true, parent: token-id })))
    (asserts! (get ok r) (err u9001))
    (asserts! (is-eq (get sum r) wh) (err u9002))
    (asserts! (is-eq (get next r) (get serial-end parent)) (err u9003))
    (asserts! (is-eq (get-status token-id) (some "split")) (err u9004))
    (asserts! (is-none (nft-get-owner? rec token-id)) (err u9005))
    (ok true)))

(define-read-only (can-test-retired-is-final (seed uint) (recipient principal))
  (let ((token-id (fuzz-pick seed)))
    (and (is-eq (nft-get-owner? rec token-id) (some tx-sender))
         (is-eq (get-status token-id) (some "active"))
         (not (is-eq recipient tx-sender))
         (not (var-get paused)))))

(define-public (test-retired-is-final (seed uint) (recipient principal))
  (let ((token-id (fuzz-pick seed)))
    (try! (retire token-id u"Property" none "US" "" "US-ERCOT" u1 u2 u2024 "test"))
    (asserts! (is-eq (transfer token-id tx-sender recipient) ERR-TOKEN-NOT-ACTIVE) (err u9010))
    (asserts! (is-err (split token-id (list u1 u1))) (err u9011))
    (asserts! (is-eq (nft-get-owner? rec token-id) (some tx-sender)) (err u9012))
    (asserts! (is-eq (get-status token-id) (some "retired")) (err u9013))
    (ok true)))

(define-read-only (can-test-no-direct-escrow (seed uint))
  (let ((token-id (fuzz-pick seed)))
    (and (is-eq (nft-get-owner? rec token-id) (some tx-sender))
         (is-eq (get-status token-id) (some "active"))
         (not (var-get paused)))))

(define-public (test-no-direct-escrow (seed uint))
  (let ((token-id (fuzz-pick seed)))
    (asserts! (is-eq (transfer token-id tx-sender (var-get marketplace)) ERR-ESCROW-NOT-ALLOWED) (err u9020))
    (asserts! (is-eq (nft-get-owner? rec token-id) (some tx-sender)) (err u9021))
    (ok true)))

(define-public (test-vintage-is-utc-year (timestamp uint))
  (let ((ts (mod timestamp u4102444800))
        (year (year-of ts))
        ;; first second of that year, by counting whole days of the years before it
        (y (- year u1))
        (days (- (+ (* u365 (- year u1970)) (- (/ y u4) (/ y u100)) (/ y u400)) u477)))
    (asserts! (>= ts (* days u86400)) (err u9030))
    (asserts! (< ts (* (+ days (if (is-leap year) u366 u365)) u86400)) (err u9031))
    (ok true)))

(define-private (is-leap (year uint))
  (and (is-eq (mod year u4) u0) (or (not (is-eq (mod year u100) u0)) (is-eq (mod year u400) u0))))
