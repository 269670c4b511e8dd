;; Rendezvous property and invariant tests for marketplace (appended to the contract by `rv`).
;; Run: npx rv . marketplace invariant --runs=N   and   npx rv . marketplace test --runs=N

;; ---- fixture, executed at deploy: six certificates owned by the deployer. This contract is
;; the approving verifier because a verifier may not decide on its own facility.
(define-constant FUZZ-EVIDENCE 0x0000000000000000000000000000000000000000000000000000000000000002)

(define-private (fuzz-issue (hour uint))
  (let ((report-id (try! (contract-call? .verification submit-report u1 (* hour u3600) (* (+ hour u1) u3600) u1000 FUZZ-EVIDENCE))))
    (try! (as-contract (contract-call? .verification attest-report report-id)))
    (contract-call? .rec-nft mint report-id "ipfs://fuzz")))

(define-private (fuzz-fixture)
  (begin
    (try! (contract-call? .verification add-verifier (as-contract tx-sender) u"fuzz verifier"))
    (try! (contract-call? .verification register-facility u"Fuzz Farm" "US" "US-TX" "US-ERCOT" "ERCOT"
            0 0 "ES100" "TC110" u1000000000 u1 none false "" "" "ipfs://facility"))
    (try! (as-contract (contract-call? .verification approve-facility u1)))
    (try! (fuzz-issue u0))
    (try! (fuzz-issue u1))
    (try! (fuzz-issue u2))
    (try! (fuzz-issue u3))
    (try! (fuzz-issue u4))
    (fuzz-issue u5)))

(unwrap-panic (fuzz-fixture))

;; ---- actions aimed at existing tokens and listings (STX only)
(define-private (fuzz-token (seed uint))
  (+ u1 (mod seed (unwrap-panic (contract-call? .rec-nft get-last-token-id)))))

(define-private (fuzz-listing (seed uint))
  (+ u1 (mod seed (if (is-eq (var-get last-listing-id) u0) u1 (var-get last-listing-id)))))

(define-public (fuzz-list (seed uint) (price uint) (blocks uint))
  (list-fixed (fuzz-token seed) none (+ u1 (mod price u1000000)) (+ stacks-block-height u1 (mod blocks u15))))

(define-public (fuzz-auction (seed uint) (price uint) (increment uint) (blocks uint))
  (let ((start (+ u1 (mod price u1000))))
    (create-auction (fuzz-token seed) none start (+ start (mod price u500)) (+ u1 (mod increment u100))
                    (+ stacks-block-height u1 (mod blocks u15)))))

(define-public (fuzz-buy (seed uint))
  (buy (fuzz-listing seed) none))

(define-public (fuzz-buy-and-retire (seed uint))
  (buy-and-retire (fuzz-listing seed) none u"Fuzz Beneficiary" none "US" "" "US-ERCOT" u1 u2 u2024 "fuzz"))

(define-public (fuzz-bid (seed uint) (extra uint))
  (let ((id (fuzz-listing seed))
        (l (unwrap! (map-get? listings id) ERR-LISTING-NOT-FOUND)))
    (place-bid id (+ (get price l) (get highest-bid l) (get min-increment l) (mod extra u1000)) none)))

(define-public (fuzz-cancel (seed uint)) (cancel-listing (fuzz-listing seed)))
(define-public (fuzz-expire (seed uint)) (expire-listing (fuzz-listing seed)))
(define-public (fuzz-settle (seed uint)) (settle-auction (fuzz-listing seed) none))

;; ---- invariants
(define-constant FUZZ-IDS (list
  u1 u2 u3 u4 u5 u6 u7 u8 u9 u10 u11 u12 u13 u14 u15 u16 u17 u18 u19 u20
  u21 u22 u23 u24 u25 u26 u27 u28 u29 u30 u31 u32 u33 u34 u35 u36 u37 u38 u39 u40
  u41 u42 u43 u44 u45 u46 u47 u48 u49 u50 u51 u52 u53 u54 u55 u56 u57 u58 u59 u60
  u61 u62 u63 u64 u65 u66 u67 u68 u69 u70 u71 u72 u73 u74 u75 u76 u77 u78 u79 u80))

(define-private (escrow-step (id uint) (acc { active: uint, bids: uint, ok: bool }))
  (match (map-get? listings id)
    l (if (is-eq (get status l) "active")
        { active: (+ (get active acc) u1),
          bids: (+ (get bids acc) (get highest-bid l)),
          ok: (and (get ok acc)
                   (is-eq (unwrap-panic (contract-call? .rec-nft get-owner (get token-id l))) (some (as-contract tx-sender)))) }
        ;; a closed listing's token has left the marketplace unless it was listed again
        acc)
    acc))

;; Every active listing's token is held by the marketplace, the marketplace holds nothing else,
;; and the STX it holds equals the highest bids of open auctions (escrowed bids, nothing lost).
(define-read-only (invariant-escrow-matches-listings)
  (or (> (var-get last-listing-id) (len FUZZ-IDS))
      (let ((r (fold escrow-step FUZZ-IDS { active: u0, bids: u0, ok: true })))
        (and (get ok r)
             (is-eq (get active r) (contract-call? .rec-nft get-escrowed-count))
             (is-eq (get bids r) (stx-get-balance (as-contract tx-sender)))))))

(define-private (sold-step (id uint) (ok-so-far bool))
  (and ok-so-far
    (match (map-get? listings id)
      l (if (is-eq (get status l) "active") true
          (not (is-eq (contract-call? .rec-nft get-status (get token-id l)) (some "split"))))
      true)))

;; No listed certificate was ever split while escrowed.
(define-read-only (invariant-listed-never-split)
  (fold sold-step FUZZ-IDS true))

;; ---- property tests
(define-public (test-fee-arithmetic (price uint))
  (let ((p (mod price u1000000000000000))
        (q (quote-fee p)))
    (asserts! (is-eq (+ (get fee q) (get seller-proceeds q)) p) (err u9100))
    (asserts! (<= (* (get fee q) BPS-DENOMINATOR) (* p MAX-FEE-BPS)) (err u9101))
    (ok true)))

(define-read-only (can-test-list-then-cancel-returns-token (seed uint) (price uint))
  (let ((token-id (fuzz-token seed)))
    (and (is-eq (unwrap-panic (contract-call? .rec-nft get-owner token-id)) (some tx-sender))
         (is-eq (contract-call? .rec-nft get-status token-id) (some "active"))
         (not (var-get paused)))))

(define-public (test-list-then-cancel-returns-token (seed uint) (price uint))
  (let ((token-id (fuzz-token seed))
        (listing-id (try! (list-fixed token-id none (+ u1 (mod price u1000)) (+ stacks-block-height u10)))))
    (asserts! (is-eq (unwrap-panic (contract-call? .rec-nft get-owner token-id)) (some (as-contract tx-sender))) (err u9110))
    (asserts! (is-eq (contract-call? .rec-nft get-status token-id) (some "listed")) (err u9111))
    (try! (cancel-listing listing-id))
    (asserts! (is-eq (unwrap-panic (contract-call? .rec-nft get-owner token-id)) (some tx-sender)) (err u9112))
    (asserts! (is-eq (contract-call? .rec-nft get-status token-id) (some "active")) (err u9113))
    (ok true)))
